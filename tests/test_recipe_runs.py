"""The main job as a product: a readable run with validation, a budget in the user's terms, and
resume after a kill (a real SIGKILL mid-phase, then the same command)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from latency_fixtures import priced_table
from recipe_fixtures import save_tiny_model, write_digit_folder
from safetensors.torch import load_file
from tiny_models import tiny_whisper
from transformers import WhisperForAudioClassification

from hf_keepwhat import MaskConfig
from hf_keepwhat.tasks.budgets import fastest_cost
from hf_keepwhat.tasks.depth import select_depth_cross_validated

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGIT_REGEX = r"(?P<label>\d)_(?P<speaker>[a-z]+)_(?P<index>\d+)\.wav"
# Real weights, real data or subprocess runs: `make test-all` (CI), not `make test`.
pytestmark = pytest.mark.slow

TRAINING = [
    "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--mask_learning_rate", "0.3",
    "--report_to", "none", "--latency_repeats", "3", "--use_cpu", "--disable_tqdm", "true",
    "--max_input_seconds", "1", "--seed", "0",
]  # fmt: skip
# Runs the recipe in this process after adding a callback that SIGKILLs it (as the OOM killer
# or a lost machine would) at one step of one phase: nothing gets to clean up.
KILLER = """
import os, runpy, signal, sys
from transformers import Trainer, TrainerCallback

PHASE, STEP = os.environ["KILL_PHASE"], int(os.environ["KILL_STEP"])

class Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if os.path.basename(args.output_dir) == PHASE and state.global_step == STEP:
            os.kill(os.getpid(), signal.SIGKILL)

init = Trainer.__init__
def patched(self, *a, **k):
    init(self, *a, **k)
    self.add_callback(Kill())
Trainer.__init__ = patched
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _classify(args, tmp_path, prefix=(), env=None):
    command = [sys.executable, *prefix, os.path.join(ROOT, "recipes", "classify.py"), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache"), **(env or {})}  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)


def _digits_args(tmp_path, out, with_head=True):
    digits = write_digit_folder(str(tmp_path / "digits"))
    model = save_tiny_model("whisper", str(tmp_path / "model"), with_head)
    return ["--model_name_or_path", model, "--data_dir", digits, "--filename_label_regex", DIGIT_REGEX,
            "--test_group", "index", "--test_values", "0", "1", "--output_dir", str(out)]  # fmt: skip


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    # Under --checkpoint average, the phases' weight averages resume too (the last and best
    # rules are Trainer's own resume).
    steps = ["--max_steps", "20", "--train_baseline", "--target_sparsity", "0.5",
             "--checkpoint", "average", *TRAINING]  # fmt: skip
    whole = _classify([*_digits_args(tmp_path, tmp_path / "whole"), *steps], tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    args = [*_digits_args(tmp_path, tmp_path / "killed"), *steps]
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    env = {"KILL_PHASE": "target0.50", "KILL_STEP": "13"}  # the last checkpoint is step 12
    killed = _classify(args, tmp_path, prefix=[str(killer)], env=env)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not (tmp_path / "killed" / "report.json").exists()
    resumed = _classify(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "baseline: finished earlier" in resumed.stdout
    assert "target0.50: resuming training from" in resumed.stdout
    assert "checkpoint-12" in resumed.stdout
    a = json.loads((tmp_path / "whole" / "report.json").read_text())
    b = json.loads((tmp_path / "killed" / "report.json").read_text())
    for key in (
        "metrics",
        "validation_metrics",
        "removed",
        "mask_checksum",
        "checkpoint_step",
    ):
        assert a["runs"][0][key] == b["runs"][0][key], key
    assert a["dense"]["metrics"] == b["dense"]["metrics"]
    assert a["checkpoint"]["rule"] == "average"
    # Evaluated every 2 steps: steps 10 to 20 averaged, the killed run's 10 and 12 included.
    assert "kept the average of 6 checkpoints up to step 20" in resumed.stdout
    # Another command in the same folder is refused; --restart starts over there.
    other = _classify([*args, "--seed", "1"], tmp_path)
    assert other.returncode == 2 and "holds a run made with other arguments" in other.stderr


def test_best_of_keeps_the_mask_run_best_on_validation_and_resumes(tmp_path):
    steps = ["--max_steps", "10", "--train_baseline", "--last_layer", "none", "--best_of", "2",
             "--checkpoint", "best", *TRAINING]  # fmt: skip
    whole = _classify(
        [*_digits_args(tmp_path, tmp_path / "whole", with_head=False), *steps], tmp_path
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "masks, run 2 of 2 (seed 1)" in whole.stdout
    assert "--best_of 2 chooses among restarts on 3 validation clips, under 100" in whole.stdout
    args = [*_digits_args(tmp_path, tmp_path / "killed", with_head=False), *steps]
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    killed = _classify(
        args, tmp_path, prefix=[str(killer)], env={"KILL_PHASE": "seed1", "KILL_STEP": "6"}
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    resumed = _classify(args, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "seed1: resuming training from" in resumed.stdout
    a = json.loads((tmp_path / "whole" / "report.json").read_text())["runs"][0]
    b = json.loads((tmp_path / "killed" / "report.json").read_text())["runs"][0]
    for key in ("best_of", "metrics", "validation_metrics", "mask_checksum"):
        assert a[key] == b[key], key
    assert [r["seed"] for r in a["best_of"]] == [0, 1]
    met = [r for r in a["best_of"] if r["met_budget"]]
    assert met, a["best_of"]  # 0.5 of the tiny model's MACs within 10 steps at mask rate 0.3
    (chosen,) = [r for r in a["best_of"] if r["chosen"]]
    assert chosen["validation_accuracy"] == max(r["validation_accuracy"] for r in met)
    # The kept run is the one pruned: pruning is exact, so its validation accuracy is the one
    # its best checkpoint had.
    assert a["validation_metrics"]["accuracy"] == pytest.approx(chosen["validation_accuracy"])
    assert "masks trained 2 times (`--best_of`)" in (tmp_path / "whole" / "report.md").read_text()
    # The first restart is the run of --seed alone: a phase's head and data order come from its
    # seed, not from what the phases before it drew.
    single = tmp_path / "single"
    result = _classify(
        [*_digits_args(tmp_path, single, with_head=False), *steps, "--best_of", "1"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    weights = [  # the last checkpoints: masks, head and the trained weights
        load_file(folder / "checkpoint-10" / "model.safetensors")
        for folder in (tmp_path / "whole" / "target0.50" / "seed0", single / "target0.50")
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_masks_start_from_a_previous_runs_fine_tuned_dense_model(tmp_path):
    # "Fine-tune dense, then masks": a run's dense/ (every weight and the head fine-tuned) is the
    # next run's model; --no_train_baseline measures it as loaded, so the second run's reference
    # is the first run's model on the same carve, clip for clip.
    first = tmp_path / "first"
    args = [*_digits_args(tmp_path, first), "--max_steps", "10", "--last_layer", "none", *TRAINING]
    result = _classify(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    second = tmp_path / "second"
    args[args.index("--model_name_or_path") + 1] = str(first / "dense")
    args[args.index("--output_dir") + 1] = str(second)
    args[args.index("--last_layer") + 1] = "auto"
    result = _classify([*args, "--no_train_baseline"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "new task head" not in result.stdout + result.stderr  # the fine-tuned head came along
    assert "dense model: as loaded, measured only" in result.stdout
    # Its depth probes read features trained on these clips: the log says to pass the depth.
    assert "depth: dense holds weights an hf_keepwhat run trained" in result.stdout
    before = json.loads((first / "report.json").read_text())
    after = json.loads((second / "report.json").read_text())
    assert before["dense_kind"] == "fine-tuned" and after["dense_kind"] == "as loaded"
    for key in ("metrics", "validation_metrics", "correct"):
        assert after["dense"][key] == before["dense"][key], key
    assert after["dense"]["macs"] == before["dense"]["macs"]


def test_match_macs_of_a_smaller_model_with_validation_and_named_phases(tmp_path):
    smaller = tmp_path / "smaller"
    tiny_whisper(encoder_layers=1, max_source_positions=100).config.save_pretrained(smaller)
    out = tmp_path / "out"
    args = [*_digits_args(tmp_path, out), "--max_steps", "10", "--train_baseline",
            "--match_macs_of", str(smaller / "config.json"), "--meet_target", *TRAINING]  # fmt: skip
    result = _classify(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout
    for phase in ("budget: --match_macs_of", "data: train 21 examples, validation 3",
                  "dense, fine-tuned:", "competitor:", "masks to remove", "masks: removed", "prune:", "evaluate: validation", "save:"):  # fmt: skip
        assert phase in log, phase
    assert "LOAD REPORT" not in log + result.stderr  # the tiny model has no decoder to leave out
    report = json.loads((out / "report.json").read_text())
    budget = report["budget_request"]
    assert budget["budget"] == "macs" and budget["value"] == "config.json"
    assert budget["allowed_cost"] < budget["model_cost"]
    expected = 1 - budget["allowed_cost"] / budget["model_cost"]
    assert expected <= budget["target_sparsity"] < expected + 1e-4
    run = report["runs"][0]
    assert run["target_sparsity"] == budget["target_sparsity"]
    assert run["macs"] <= budget["allowed_cost"]  # meet_target switched units off until it fits
    assert set(run["validation_metrics"]) >= {"accuracy", "balanced_accuracy"}
    assert report["validation_examples"] == 3 and report["test_examples"] == 12
    assert report["model"] == "model"  # a local folder is named by its own name, not its path
    text = (out / "report.md").read_text()
    assert "Budget: at most `config.json`'s backbone macs" in text
    assert "within the budget" in text and "validation accuracy" in text


def test_defaults_fit_the_window_to_the_data_and_choose_the_depth_on_validation(tmp_path):
    out = tmp_path / "out"
    args = [*_digits_args(tmp_path, out), "--max_steps", "9",
            "--report_to", "none", "--use_cpu", "--disable_tqdm", "true"]  # fmt: skip
    result = _classify(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "window: 1 s (the longest train clip is 0.65 s" in result.stdout
    assert "depth: layers 0-" in result.stdout
    report = json.loads((out / "report.json").read_text())
    depth = report["depth"]
    assert sorted(r["last_layer"] for r in depth["probes"]) == [0, 1, 2]  # the tiny model's 3
    # The depth is the cross-validated rule's choice for a 50% MACs budget, read from the table.
    assert depth["rule"] == "cross-validated"
    assert depth["last_layer"] == select_depth_cross_validated(depth["probes"], removable=0.5)
    config = report["mask_config"]
    assert config["budget"] == "macs" and config["mask_learning_rate"] == 0.02
    assert config["target_warmup_steps"] == 3 and config["max_input_seconds"] == 1.0
    # Classification trains the weights by default: the masks' backbone and the dense reference.
    assert config["train_backbone"] is True and report["dense_kind"] == "fine-tuned"
    pruned = json.loads((out / "target0.50" / "pruned" / "config.json").read_text())
    layers = pruned.get("encoder_layers", pruned.get("num_hidden_layers"))
    assert layers == depth["last_layer"] + 1
    assert "Depth (`--last_layer auto`)" in (out / "report.md").read_text()
    # 3 validation clips: every phase keeps its last checkpoint, and the log and report say why.
    assert (
        "checkpoints: each phase keeps its last one (--checkpoint auto: validation has 3 clips"
        in result.stdout
    )
    assert report["checkpoint"]["rule"] == "last" and report["runs"][0]["checkpoint_step"] == 9
    assert "masks: removed" in result.stdout and "kept the last one (step" in result.stdout
    assert "Checkpoints: each phase kept its last one" in (out / "report.md").read_text()


def test_a_latency_budget_in_milliseconds(tmp_path):
    out, table = tmp_path / "out", tmp_path / "latency.json"
    args = [*_digits_args(tmp_path, out), "--max_steps", "10", "--no_train_baseline",
            "--last_layer", "none"]  # fmt: skip
    # Chosen prices, not a profile of this machine: a tiny model's time is mostly a fixed cost,
    # which a noisy fit may give all of (nothing left to remove). `keepwhat profile-latency`
    # itself is tested in test_latency.py.
    model = WhisperForAudioClassification.from_pretrained(args[1])
    table.write_text(json.dumps(priced_table(model, layers=1.0, mmacs_ffn=0.5, groups_heads=0.25)))
    config = MaskConfig(max_input_seconds=1, budget="latency", latency_table=str(table))
    dense = json.loads(table.read_text())["dense_predicted_ms"]
    allowed = (dense + fastest_cost(model, config, "latency")) / 2
    assert allowed < dense
    args += ["--latency_table", str(table), "--max_latency_ms", str(allowed), "--meet_target"]
    result = _classify([*args, *TRAINING], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "budget: --max_latency_ms" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["budget_request"]["budget"] == "latency"
    assert report["depth"] is None and "depth:" not in result.stdout  # --last_layer none
    assert report["mask_config"]["latency_table"]["runtime"] == "torch"
    run = report["runs"][0]
    assert run["latency_predicted_ms"] <= allowed  # meet_target: within the predicted budget
    assert run["latency_runtime"] == "torch, cpu, 1 threads, batch 1, 1 s"
    assert f"ms on {run['latency_runtime']}" in (out / "report.md").read_text()
