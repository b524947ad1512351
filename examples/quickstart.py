"""Quickstart: keep half of Whisper tiny.en's encoder parameters for spoken digits (FSDD)."""

import glob
import os
import re

from datasets import Audio, Dataset
from transformers import (
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    Trainer,
    TrainingArguments,
)

from hf_keepwhat import MaskConfig, SparsityCallback, get_mask_model

model_id = os.environ.get("KEEPWHAT_WHISPER_TINY", "openai/whisper-tiny.en")
files = sorted(glob.glob(os.path.join(os.environ["KEEPWHAT_FSDD"], "*.wav")))
train_files = [f for f in files if int(re.search(r"_(\d+)\.wav$", f)[1]) >= 5]  # FSDD's train split
train = Dataset.from_dict(
    {"audio": train_files, "label": [int(os.path.basename(f)[0]) for f in train_files]}
).cast_column("audio", Audio(sampling_rate=16_000))  # decoded and resampled by datasets

extractor = AutoFeatureExtractor.from_pretrained(model_id, chunk_length=3)  # 3 s, not 30 s
train = train.map(
    lambda batch: extractor([a["array"] for a in batch["audio"]], sampling_rate=16_000),
    batched=True,
    remove_columns="audio",
)

model = AutoModelForAudioClassification.from_pretrained(model_id, num_labels=10)
config = MaskConfig(
    budget="params",  # remove 50% of the encoder's parameters
    target_sparsity=0.5,
    max_input_seconds=3,  # cut Whisper's positional table to the 3 s window
    mask_learning_rate=0.03,
    target_warmup_steps=40,
)
mm = get_mask_model(model, config)  # backbone frozen (and in eval mode); masks + head train
args = TrainingArguments(
    "out/quickstart", max_steps=120, per_device_train_batch_size=8, learning_rate=1e-3,
    logging_steps=20, save_strategy="no", report_to=[],
)  # fmt: skip
# SparsityCallback gives the masks their own rate whatever optimizer Trainer builds.
Trainer(model=mm, args=args, train_dataset=train, callbacks=[SparsityCallback(config)]).train()

total = mm.sparsity_report()["total"]  # realised, from the hard masks
print(f"encoder parameters removed: {total['params_removed_fraction']:.1%}")
pruned = mm.prune()  # a smaller WhisperForAudioClassification (a subclass recording the shapes)
pruned.save_pretrained("out/quickstart/pruned")  # + feature extractor + model card
mm.save_pretrained("out/quickstart/adapter")  # masks + head: a few hundred kB
