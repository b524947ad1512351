"""Every recipe runs end to end on tiny models and synthetic audio; accelerate's 2-process run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from recipe_fixtures import save_tiny_ctc_model, save_tiny_model, tone, write_digit_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGIT_REGEX = r"(?P<label>\d)_(?P<speaker>[a-z]+)_(?P<index>\d+)\.wav"
COMMON = [
    "--max_steps", "6", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3",
    "--mask_learning_rate", "0.3", "--report_to", "none", "--save_strategy", "no",
    "--latency_repeats", "3", "--use_cpu", "--disable_tqdm", "true",
    "--budget", "params", "--target_warmup_steps", "0", "--train_backbone", "false",  # MaskConfig's defaults, not the recipe's
]  # fmt: skip
FROZEN_DEFAULTS = ("--budget", "params", "--train_backbone", "false")


def _recipe(name, args, tmp_path, launcher=None):
    command = (launcher or [sys.executable]) + [os.path.join(ROOT, "recipes", f"{name}.py"), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    return result


def _check_outputs(out, targets):
    report = json.loads((out / "report.json").read_text())
    assert [run["target_sparsity"] for run in report["runs"]] == targets
    for run in report["runs"]:
        folder = out / f"target{run['target_sparsity']:.2f}"
        for name in ("adapter/keepwhat_adapter.safetensors", "adapter/README.md", "pruned/config.json",
                     "pruned/model.safetensors", "pruned/README.md"):  # fmt: skip
            assert (folder / name).exists(), name
        assert run["latency"]["median_s"] > 0 and run["disk_bytes"] > 0
        assert set(run["ratios"]) == {"params", "backbone_params", "macs", "latency", "disk"}
        assert (out / "plots" / f"kept_units_target{run['target_sparsity']:.2f}.png").exists()
    assert (out / "report.md").read_text().startswith("# hf_keepwhat report")
    return report


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digit_folder(str(tmp_path_factory.mktemp("digits")))


def test_classify_whisper_with_baseline_and_sweep(tmp_path, digits):
    model = save_tiny_model("whisper", str(tmp_path / "model"))
    out = tmp_path / "out"
    args = ["--model_name_or_path", model, "--data_dir", digits, "--filename_label_regex", DIGIT_REGEX,
            "--test_group", "index", "--test_values", "0", "1", "--target_sparsity", "0.3", "0.6",
            "--max_input_seconds", "1", "--train_baseline", "--output_dir", str(out), *COMMON]  # fmt: skip
    result = _recipe("classify", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = _check_outputs(out, [0.3, 0.6])
    assert report["dense"]["metrics"]["accuracy"] is not None and report["test_examples"] == 12
    assert (out / "plots" / "metric_vs_sparsity.png").exists()
    assert (
        json.loads((out / "target0.30" / "pruned" / "preprocessor_config.json").read_text())[
            "chunk_length"
        ]
        == 1
    )
    assert report["runs"][1]["removed"]["params_removed_fraction"] > 0
    # How sure: every accuracy's interval, the paired gap to dense, the small-validation warning.
    low, high = report["intervals"]["runs"][0]["accuracy"]["test"]
    assert low <= report["runs"][0]["metrics"]["accuracy"] <= high
    assert set(report["intervals"]["runs"][1]["minus_dense"]) == {"validation", "test"}
    assert "are not told apart (95%)" in result.stdout  # the log's warning
    assert "**Warning.** Validation has" in (out / "report.md").read_text()
    assert "95% interval" in (out / "target0.30" / "pruned" / "README.md").read_text()


@pytest.mark.slow
def test_classify_wav2vec2(tmp_path, digits):
    model = save_tiny_model("wav2vec2", str(tmp_path / "model"))
    out = tmp_path / "out"
    args = ["--model_name_or_path", model, "--data_dir", digits, "--filename_label_regex", DIGIT_REGEX,
            "--test_group", "index", "--test_values", "0", "--output_dir", str(out), *COMMON]  # fmt: skip
    result = _recipe("classify", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _check_outputs(out, [0.5])


def _audiofolder(root, rows_by_split, rate=16000):
    rng = np.random.default_rng(0)
    for split, rows in rows_by_split.items():
        os.makedirs(root / split, exist_ok=True)
        with open(root / split / "metadata.jsonl", "w") as f:
            for i, row in enumerate(rows):
                name = f"{i}.wav"
                sf.write(root / split / name, tone(i % 3, 0.5, rate, rng), rate)
                f.write(json.dumps({"file_name": name, **row}) + "\n")
    return str(root)


@pytest.mark.slow
def test_tag_multilabel_with_distillation_train_to_target_meet_target_and_head_refit(tmp_path):
    tags = [["rock"], ["jazz", "vocal"], ["rock", "vocal"], ["jazz"]]
    data = _audiofolder(tmp_path / "tags", {"train": [{"tags": t} for t in tags * 3],
                                            "test": [{"tags": t} for t in tags]})  # fmt: skip
    model = save_tiny_model("whisper", str(tmp_path / "model"))
    out = tmp_path / "out"
    args = ["--model_name_or_path", model, "--data_dir", data, "--label_column", "tags",
            "--distill_weight", "1.0", "--train_to_target_steps", "2",
            "--meet_target", "--meet_target_selection", "fit_the_gap",
            "--meet_target_unit_kinds", "heads", "ffn",
            "--refit_head_steps", "3",
            "--output_dir", str(out), *COMMON,
            "--mask_learning_rate", "0.01"]  # fmt: skip
    result = _recipe("tag", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = _check_outputs(out, [0.5])
    run = report["runs"][0]
    for metrics in (run["metrics"], run["metrics_before_head_refit"]):
        assert 0 <= metrics["mean_average_precision"] <= 1 and 0 <= metrics["roc_auc"] <= 1
    config = json.loads((out / "target0.50" / "pruned" / "config.json").read_text())
    assert config["keepwhat"]["head_refit"]["steps"] == 3
    assert config["keepwhat"]["mask_config"]["distill_weight"] == 1.0
    met = config["keepwhat"]["target_met"]  # masks this slow cannot reach 50% in 6 steps
    assert met["realised_before"] < 0.5 <= met["realised"] and report["meet_target"] is True
    assert met["selection"] == report["meet_target_selection"] == "fit_the_gap"
    assert met["unit_kinds"] == sorted(report["meet_target_unit_kinds"]) == ["ffn", "heads"]
    trained = config["keepwhat"]["target_trained"]  # before meet_target, too slow to meet it
    assert trained["realised"] == pytest.approx(met["realised_before"]) and trained["aims"]
    assert trained["steps"] == 2 * len(trained["aims"]) == report["train_to_target_steps"] * 3
    total = config["keepwhat"]["report"]["total"]
    assert total[f"{config['keepwhat']['mask_config']['budget']}_removed_fraction"] >= 0.5


@pytest.mark.slow
def test_ctc(tmp_path):
    words = ["ab", "ba", "cab", "abc"]
    data = _audiofolder(tmp_path / "asr", {"train": [{"text": w} for w in words * 3],
                                           "test": [{"text": w} for w in words]})  # fmt: skip
    model = save_tiny_ctc_model(str(tmp_path / "model"), list("abc"))
    out = tmp_path / "out"
    args = ["--model_name_or_path", model, "--data_dir", data, "--output_dir", str(out), *COMMON]
    result = _recipe("ctc", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = _check_outputs(out, [0.5])
    assert {"wer", "cer"} <= set(report["runs"][0]["metrics"])


@pytest.mark.slow
def test_missing_label_column_is_one_clear_line(tmp_path, digits):
    model = save_tiny_model("whisper", str(tmp_path / "model"))
    args = ["--model_name_or_path", model, "--data_dir", digits, "--filename_label_regex", DIGIT_REGEX,
            "--label_column", "digit", "--output_dir", str(tmp_path / "out"), *COMMON]  # fmt: skip
    result = _recipe("classify", args, tmp_path)
    assert result.returncode == 2
    assert "error: The dataset has no label column 'digit'" in result.stderr
    assert "Traceback" not in result.stderr
    args[args.index("--label_column") : args.index("--label_column") + 2] = ["--best_of", "0"]
    result = _recipe("classify", args, tmp_path)
    assert result.returncode == 2 and "error: --best_of 0: give the number" in result.stderr


@pytest.mark.slow
def test_accelerate_two_processes_end_with_identical_masks(tmp_path, digits):
    """accelerate's `--cpu` alone runs one process (its multi-CPU path is mpirun); its torchrun
    launcher (`--multi_gpu`) with the script's `--use_cpu` runs two gloo processes on the CPU.
    The backbone trains, after waiting two steps (`--head_first_steps`: its gradients are dropped
    after DistributedDataParallel reduced them, which must not stall the processes)."""
    model = save_tiny_model("whisper", str(tmp_path / "model"))
    out = tmp_path / "out"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    args = ["--model_name_or_path", model, "--data_dir", digits, "--filename_label_regex", DIGIT_REGEX,
            "--test_group", "index", "--test_values", "0", "1", "--output_dir", str(out),
            *COMMON, "--train_backbone", "--head_first_steps", "2"]  # fmt: skip
    result = _recipe("classify", args, tmp_path, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert (
        report["mask_config"]["train_backbone"] and report["mask_config"]["head_first_steps"] == 2
    )
    run = report["runs"][0]
    assert run["processes"] == 2
    assert run["mask_checksums_agree"]


@pytest.mark.slow
def test_classify_with_the_papers_mlp_head_on_any_backbone(tmp_path, digits):
    from safetensors.torch import load_file

    from hf_keepwhat import load_pruned_module
    from hf_keepwhat.tasks import pooled_classifier

    model = save_tiny_model("wav2vec2", str(tmp_path / "model"))
    out = tmp_path / "out"
    args = ["--model_name_or_path", model, "--head", "mlp", "--data_dir", digits,
            "--filename_label_regex", DIGIT_REGEX, "--test_group", "index", "--test_values", "0",
            "1", "--target_sparsity", "0.3", "--output_dir", str(out), *COMMON]  # fmt: skip
    result = _recipe("classify", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    (run,) = report["runs"]
    assert run["removed"]["params_removed_fraction"] > 0 and run["ratios"]["macs"] > 1
    folder = out / "target0.30"
    assert set(load_file(folder / "adapter" / "keepwhat_masks.safetensors")) >= {
        "model.classifier.0.weight",  # the MLP head trained with the masks
    }
    num_labels = 3  # the digits fixture's classes
    pruned = load_pruned_module(pooled_classifier(model, num_labels, "mlp"), folder / "pruned")
    logits = pruned(input_values=torch.randn(1, 1600)).logits
    assert logits.shape == (1, num_labels)
    assert (folder / "pruned" / "preprocessor_config.json").exists()


@pytest.mark.slow
def test_classify_with_a_fold_split_and_half_a_second_window(tmp_path, digits):
    model = save_tiny_model("whisper", str(tmp_path / "model"))
    out = tmp_path / "out"
    args = ["--model_name_or_path", model, "--data_dir", digits, "--filename_label_regex",
            DIGIT_REGEX, "--test_fold", "ann", "--fold_column", "speaker", "--target_sparsity", "0.3",
            "--max_input_seconds", "0.5", "--output_dir", str(out), *COMMON]  # fmt: skip
    result = _recipe("classify", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # A keyword-spotting window of half a second: hf_keepwhat's extractor pads to 8000 samples.
    extractor = json.loads((out / "target0.30/pruned/preprocessor_config.json").read_text())
    assert (extractor["chunk_length"], extractor["n_samples"]) == (0.5, 8000)
    report = json.loads((out / "report.json").read_text())
    assert report["test_examples"] == 18  # every file of speaker "ann": 3 labels x 6
    assert 0 <= report["runs"][0]["metrics"]["balanced_accuracy"] <= 1
    bad_args = [*args[: -len(COMMON)], "--test_fold", "zoe", *COMMON]
    bad_args[bad_args.index("--output_dir") + 1] = str(tmp_path / "bad")
    bad = _recipe("classify", bad_args, tmp_path)
    assert bad.returncode == 2 and "--test_fold ['zoe'] selects 0 of 36 rows" in bad.stderr


@pytest.mark.parametrize(
    ("preset", "dataset", "label", "fold"),
    [
        ("esc50", "ashraq/esc50", "category", "5"),
        ("urbansound8k", "danavery/urbansound8K", "class", "10"),
    ],
)
def test_presets_fill_the_checked_fold_splits(monkeypatch, tmp_path, preset, dataset, label, fold):
    from hf_keepwhat.tasks.arguments import parse_arguments

    argv = ["classify.py", "--model_name_or_path", "m", "--output_dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", [*argv, "--preset", preset])
    data = parse_arguments()[1]
    assert (data.dataset_name, data.label_column, data.test_fold) == (dataset, label, [fold])
    monkeypatch.setattr(sys, "argv", [*argv, "--preset", preset, "--test_fold", "3"])
    assert parse_arguments()[1].test_fold == ["3"]  # a preset never overrides the user
    monkeypatch.setattr(sys, "argv", [*argv, "--preset", "nsynth_pitch"])
    with pytest.raises(SystemExit):  # dropped: a loading-script dataset
        parse_arguments()


@pytest.mark.parametrize(
    "given, classify, other",
    [([], True, False), (["--train_backbone"], True, True),
     (["--train_backbone", "false"], False, False)],
)  # fmt: skip
def test_train_backbone_unset_is_decided_by_the_task(monkeypatch, tmp_path, given, classify, other):
    from hf_keepwhat.tasks.arguments import parse_arguments
    from hf_keepwhat.tasks.recipe import fill_task_defaults
    from hf_keepwhat.tasks.run import Task

    argv = ["classify.py", "--model_name_or_path", "m", "--output_dir", str(tmp_path), *given]
    monkeypatch.setattr(sys, "argv", argv)
    for trains_weights, expected in ((True, classify), (False, other)):
        mask_args = parse_arguments()[2]
        task = Task("t", object, "accuracy", None, None, trains_weights=trains_weights)
        fill_task_defaults(task, mask_args)
        assert mask_args.train_backbone is expected
    # Distillation's teacher is the frozen backbone: asking for it keeps the backbone frozen.
    monkeypatch.setattr(sys, "argv", [*argv, "--distill_weight", "1"])
    mask_args = parse_arguments()[2]
    fill_task_defaults(Task("t", object, "accuracy", None, None, trains_weights=True), mask_args)
    assert mask_args.train_backbone is (classify and "--train_backbone" in given)


@pytest.mark.slow
def test_classify_trains_the_weights_with_the_masks_and_fine_tunes_after_pruning(tmp_path, digits):
    model = save_tiny_model("whisper", str(tmp_path / "model"))
    out = tmp_path / "out"
    args = ["--model_name_or_path", model, "--data_dir", digits, "--filename_label_regex", DIGIT_REGEX,
            "--test_group", "index", "--test_values", "0", "1", "--max_input_seconds", "1",
            "--last_layer", "1", "--backbone_learning_rate", "1e-3",
            "--finetune_steps", "4", "--finetune_distill_weight", "1", "--no_train_baseline",
            "--output_dir", str(out), *COMMON, "--train_backbone"]  # fmt: skip
    result = _recipe("classify", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fine-tune: every kept weight and the head, distilled" in result.stdout
    report = json.loads((out / "report.json").read_text())
    (run,) = report["runs"]
    assert run["adapter"] is None and not (out / "target0.50" / "adapter").exists()
    assert "accuracy" in run["metrics_before_finetune"] and report["finetune_steps"] == 4
    pruned = json.loads((out / "target0.50" / "pruned" / "config.json").read_text())
    assert pruned["keepwhat"]["recovery"]["method"] == "finetune"
    assert pruned["keepwhat"]["recovery"]["distill_weight"] == 1.0
    assert pruned["keepwhat"]["mask_config"]["train_backbone"] is True
    assert (out / "target0.50" / "finetune").is_dir()  # its checkpoints: a killed run resumes


@pytest.mark.slow
def test_match_macs_of_trains_the_competitor_as_classify_trains_weights_by_default(
    tmp_path, digits
):
    model = save_tiny_model("whisper", str(tmp_path / "model"))
    small = save_tiny_model(
        "whisper", str(tmp_path / "small"), encoder_layers=2, encoder_ffn_dim=24
    )
    out = tmp_path / "out"
    args = ["--model_name_or_path", model, "--data_dir", digits, "--filename_label_regex", DIGIT_REGEX,
            "--test_group", "index", "--test_values", "0", "1", "--max_input_seconds", "1",
            "--last_layer", "none", "--match_macs_of", small,
            "--output_dir", str(out), *[a for a in COMMON if a not in FROZEN_DEFAULTS]]  # fmt: skip
    result = _recipe("classify", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "competitor: small, every weight fine-tuned" in result.stdout
    report = json.loads((out / "report.json").read_text())
    competitor = report["competitor"]
    assert report["mask_config"]["train_backbone"] is True and report["dense_kind"] == "fine-tuned"
    assert competitor["model"] == "small" and competitor["steps"] == 6  # the masks' --max_steps
    assert competitor["macs"] <= report["budget_request"]["allowed_cost"]
    assert set(report["intervals"]["runs"][0]["minus_competitor"]) == {"validation", "test"}
    assert "minus `small` fine-tuned" in (out / "report.md").read_text()
