"""The Torch-Pruning arm of benchmarks/weight_arms.py: whole heads and FFN neurons to a MACs
budget, d_model and the conv stem kept, and the finding that its Whisper does not load back."""

import pytest
import torch
from test_trainer import _synthetic_dataset
from tiny_models import tiny_whisper

from benchmarks.weight_arms import _loads_back, torch_pruned
from hf_keepwhat.profiling import count_macs

# Real weights, real data or subprocess runs: `make test-all` (CI), not `make test`.
pytestmark = pytest.mark.slow


def test_torch_pruning_meets_the_macs_budget_with_whole_heads_and_loads_back_refused(tmp_path):
    model = tiny_whisper()
    data = _synthetic_dataset(8)
    batch = {
        "input_features": torch.tensor(data["input_features"]),
        "labels": torch.tensor(data["labels"]),
    }
    features = {"input_features": batch["input_features"][:1]}

    def macs_of(m):
        return count_macs(m.encoder, features)

    dense = macs_of(model)
    pruned, ratio = torch_pruned(model, "taylor", int(0.6 * dense), batch, macs_of)
    assert 0 < ratio < 1 and macs_of(pruned) <= 0.6 * dense
    for layer in pruned.encoder.layers:
        attention = layer.self_attn
        assert attention.q_proj.out_features == attention.num_heads * attention.head_dim
        assert attention.out_proj.out_features == 32 and layer.fc2.out_features == 32  # d_model
    assert pruned.encoder.conv2.out_channels == 32
    assert pruned(**features).logits.shape == (1, 3)
    assert _loads_back(pruned, str(tmp_path)).startswith("no: ")


def test_a_recipe_arm_and_a_finetune_arm_score_their_last_checkpoint_beside_the_best(tmp_path):
    import json
    import os
    import subprocess
    import sys

    import numpy as np
    import soundfile as sf
    from recipe_fixtures import save_tiny_model, tone

    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 3)):
        for label in range(3):
            os.makedirs(tmp_path / "data" / split / f"c{label}")
            for i in range(count):
                path = tmp_path / "data" / split / f"c{label}" / f"{i}.wav"
                sf.write(path, tone(label, 0.5, 16000, rng), 16000)
    model = save_tiny_model("whisper", str(tmp_path / "model"))
    command = [
        sys.executable, "benchmarks/weight_arms.py", "--arm", "recipe", "--model", model,
        "--data_dir", str(tmp_path / "data"), "--regime", "test", "--steps", "6",
        "--out", str(tmp_path / "rows.json"), "--keep_dir", str(tmp_path / "run"), "--score_last",
        "--", "--use_cpu", "--per_device_train_batch_size", "4", "--checkpoint", "best",
    ]  # fmt: skip
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(command, capture_output=True, text=True, cwd=root, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads((tmp_path / "rows.json").read_text())["rows"]
    last = row["last_checkpoint"]
    assert set(last) == {"baseline", "target0.50"}
    best = {"baseline": row["dense_probe"], "target0.50": row}
    for phase, scored in last.items():
        assert scored["step"] == 6 and len(scored["correct"]["test"]) > 0
        state = tmp_path / "run" / phase / "checkpoint-6" / "trainer_state.json"
        logged = json.loads(state.read_text())["log_history"]
        # The weights scored are the last checkpoint's: Trainer's own validation at step 6.
        assert (
            scored["validation"] == [h for h in logged if "eval_accuracy" in h][-1]["eval_accuracy"]
        )
        if scored["best_is_last"]:  # the same weights, scored the same way
            assert scored["test"] == best[phase]["test"]
    # An arm fine-tuned outside the recipe scores its last checkpoint the same way.
    command[command.index("recipe")] = "finetune"
    command[command.index("--keep_dir") + 1] = str(tmp_path / "finetune")
    result = subprocess.run(
        command[: command.index("--")], capture_output=True, text=True, cwd=root, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads((tmp_path / "rows.json").read_text())["rows"][-1]
    scored = row["last_checkpoint"]["finetune"]
    state = tmp_path / "finetune" / "checkpoint-6" / "trainer_state.json"
    logged = json.loads(state.read_text())["log_history"]
    assert scored["step"] == 6
    assert scored["validation"] == [h for h in logged if "eval_accuracy" in h][-1]["eval_accuracy"]
    if scored["best_is_last"]:
        assert scored["test"] == row["test"]
