#!/usr/bin/env bash
# Everything this project measures on a GPU, in one run that fits a short GPU loan:
#   speed     benchmarks/gpu_speed.py: latency by dtype / batch / round_to, training step time
#             and memory (random-weight Whisper tiny, base and large-v3 shapes)
#   scale     benchmarks/scale.py --device cuda: every library step's time and peak GPU memory,
#             Whisper tiny- to large-v3-sized and wav2vec2 base/large-sized
#   frontier  benchmarks/frontier.py on $FRONTIER_DATA for the models in $FRONTIER_MODELS,
#             several runs at once, resuming from benchmarks/results/frontier_gm.json
# Usage: benchmarks/gpu.sh [speed] [scale] [frontier]        (all when none is named)
# Environment: OUT (results folder; default benchmarks/results), PYTHON, SPEED_SECONDS, SCALE_SECONDS,
#   FRONTIER_MODELS ("NAME=PATH ..."), FRONTIER_DATA, MATCH_MACS_OF, LAST_LAYERS ("NAME=K ..."),
#   FRONTIER_MINUTES (stop starting runs after this long), WORKERS, FRONTIER_ARGS (more
#   frontier.py options, e.g. "--meet_target --refit_head_steps 2000").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
for part in ${*:-speed scale frontier}; do
  case $part in
    speed)
      # Killed at its limit it still leaves the rows measured so far (JSON after each model).
      timeout "${SPEED_SECONDS:-150}" "$PYTHON" benchmarks/gpu_speed.py --out "$OUT/gpu_speed.json" || true
      ;;
    scale)
      # One process per size; JSON after each, so a stop at the limit keeps the sizes done.
      timeout "${SCALE_SECONDS:-120}" "$PYTHON" benchmarks/scale.py --device cuda \
        --out "$OUT/scale_gpu.json" || true
      ;;
    frontier)
      results=benchmarks/results/frontier_gm.json
      if [ -f "$results" ] && [ ! -f "$OUT/frontier_gm.json" ]; then cp "$results" "$OUT/"; fi
      args=()
      for model in ${FRONTIER_MODELS:?set FRONTIER_MODELS to NAME=PATH pairs}; do args+=(--model "$model"); done
      for cut in ${LAST_LAYERS:-}; do args+=(--last_layer "$cut"); done
      if [ -n "${MATCH_MACS_OF:-}" ]; then args+=(--match_macs_of "$MATCH_MACS_OF"); fi
      "$PYTHON" benchmarks/frontier.py --data "${FRONTIER_DATA:?set FRONTIER_DATA}" "${args[@]}" \
        --workers "${WORKERS:-14}" --threads 1 --stop_after_minutes "${FRONTIER_MINUTES:-5}" \
        --out "$OUT/frontier_gm.json" ${FRONTIER_ARGS:-}
      ;;
    *) echo "unknown part $part: choose from speed, scale and frontier" >&2; exit 2 ;;
  esac
done
