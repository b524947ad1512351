#!/usr/bin/env bash
# The main job (`make demo`): spoken-digit classification with Whisper tiny.en on FSDD, 3 s input
# window, 50% of the encoder's parameters removed, FSDD's standard split (index 0-4 is test).
# The recipe's defaults otherwise: the kept weights train with the masks, the dense model is
# fine-tuned the same way as the reference.
# Model: $KEEPWHAT_WHISPER_TINY, else openai/whisper-tiny.en from the Hub.
# Data: $KEEPWHAT_FSDD (a folder of {digit}_{speaker}_{index}.wav), else the Hub copy.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-out/demo}

model=${KEEPWHAT_WHISPER_TINY:-}
[ -n "$model" ] && [ -e "$model" ] || model=openai/whisper-tiny.en
if [ -n "${KEEPWHAT_FSDD:-}" ] && [ -d "$KEEPWHAT_FSDD" ]; then
  data=(--data_dir "$KEEPWHAT_FSDD"
        --filename_label_regex '(?P<label>\d)_(?P<speaker>[a-z]+)_(?P<index>\d+)\.wav'
        --test_group index --test_values 0 1 2 3 4)
else
  data=(--dataset_name mteb/free-spoken-digit-dataset)
fi

exec "$PYTHON" recipes/classify.py \
  --model_name_or_path "$model" "${data[@]}" \
  --max_input_seconds 3 --budget params --target_sparsity 0.5 \
  --mask_learning_rate 0.02 --target_warmup_steps 200 \
  --train_baseline --max_steps 600 --per_device_train_batch_size 8 --learning_rate 1e-3 \
  --logging_steps 50 --report_to none --seed 0 \
  --output_dir "$OUT" "$@"
