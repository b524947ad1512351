"""The recipes' building blocks on their own: validation carving, budgets in the user's terms, the
best checkpoint within the budget, the weight-loading summary and the run folder's record."""

import dataclasses
import logging
import math

import numpy as np
import pytest
import torch
from datasets import Dataset
from tiny_models import tiny_whisper
from transformers import (
    TrainerState,
    TrainingArguments,
    WhisperConfig,
    WhisperForAudioClassification,
    WhisperForConditionalGeneration,
)

from hf_keepwhat import MaskConfig, get_mask_model
from hf_keepwhat.tasks import AudioDataError
from hf_keepwhat.tasks.budgets import backbone_cost, fastest_cost, resolve_budget
from hf_keepwhat.tasks.loading import load_pretrained
from hf_keepwhat.tasks.run_folder import RunFolder
from hf_keepwhat.tasks.selection import (
    LAST_CHECKPOINT_BELOW,
    BudgetMetricCallback,
    checkpoint_rule,
    describe_kept,
    kept_checkpoint,
    restarts_warning,
)
from hf_keepwhat.tasks.splits import carve_validation


def _labelled(counts: dict[str, int]) -> Dataset:
    labels = [label for label, n in counts.items() for _ in range(n)]
    return Dataset.from_dict({"label": labels, "i": list(range(len(labels)))})


def test_validation_is_stratified_seeded_and_disjoint():
    data = _labelled({"a": 50, "b": 30, "c": 20})
    train, validation = carve_validation(data, 0.1, "label", seed=0)
    assert len(validation) == 10 and len(train) == 90
    assert sorted(validation["label"]) == ["a"] * 5 + ["b"] * 3 + ["c"] * 2  # stratified
    assert not set(train["i"]) & set(validation["i"])
    assert carve_validation(data, 0.1, "label", seed=0)[1]["i"] == validation["i"]  # seeded
    assert carve_validation(data, 0.1, "label", seed=1)[1]["i"] != validation["i"]
    # Every class gets a validation row even when a tenth would round below the class count.
    few = carve_validation(_labelled({"a": 4, "b": 4, "c": 4}), 0.1, "label", seed=0)[1]
    assert sorted(few["label"]) == ["a", "b", "c"]


def test_validation_of_unstratifiable_labels_is_random_and_errors_are_clear():
    tags = Dataset.from_dict({"label": [["x"], ["y", "z"]] * 10})
    train, validation = carve_validation(tags, 0.2, "label", seed=0)
    assert (len(train), len(validation)) == (16, 4)
    with pytest.raises(AudioDataError, match="must be in \\(0, 1\\)"):
        carve_validation(tags, 1.5, "label", seed=0)
    with pytest.raises(AudioDataError, match="too few to hold out"):
        carve_validation(_labelled({"a": 1}), 0.5, "label", seed=0)


def test_a_budget_as_cheap_as_another_model(tmp_path):
    config = MaskConfig(max_input_seconds=1, budget="macs", target_sparsity=0.0)
    big, small = tiny_whisper(), tiny_whisper(encoder_layers=1)
    own = backbone_cost(tiny_whisper(), config, "macs")
    allowed = backbone_cost(tiny_whisper(encoder_layers=1), config, "macs")
    assert allowed < own
    small.config.save_pretrained(tmp_path / "small")

    def build(c):
        return WhisperForAudioClassification(c)

    budget = resolve_budget(("match_macs_of", str(tmp_path / "small")), config, big, build)
    assert (budget["model_cost"], budget["allowed_cost"]) == (own, allowed)
    assert budget["budget"] == "macs"
    assert budget["target_sparsity"] == math.ceil((1 - allowed / own) * 1e4) / 1e4
    fewest = fastest_cost(tiny_whisper(), config, "params")
    assert 0 < fewest < backbone_cost(tiny_whisper(), config, "params")
    params = resolve_budget(("max_params", int(fewest) + 1), config, tiny_whisper(), build)
    assert params["budget"] == "params" and params["allowed_cost"] == int(fewest) + 1
    with pytest.raises(ValueError, match="below the .* that pruning every unit"):
        resolve_budget(("max_params", int(fewest) - 1), config, tiny_whisper(), build)
    with pytest.raises(ValueError, match="is not below the model's own"):
        resolve_budget(("max_macs", own), config, tiny_whisper(), build)


def test_only_checkpoints_that_meet_the_budget_compete():
    mm = get_mask_model(tiny_whisper(), MaskConfig(budget="params", target_sparsity=0.5))
    callback = BudgetMetricCallback(mm, "accuracy", tolerance=0.01)
    metrics = {"eval_accuracy": 0.9}
    callback.on_evaluate(None, None, None, metrics=metrics)  # every unit still kept
    assert metrics["eval_accuracy_within_budget"] == -math.inf
    assert metrics["eval_removed_fraction"] == pytest.approx(0.0)
    with torch.no_grad():
        for group in mm.unit_groups:
            half = group.num_units // 2
            mm.set_kept(group.name, list(range(half)) if half else [0])
    removed = mm.sparsity_report()["total"]["params_removed_fraction"]
    metrics = {"eval_accuracy": 0.8}
    BudgetMetricCallback(mm, "accuracy", tolerance=0.5 - removed + 1e-6).on_evaluate(
        None, None, None, metrics=metrics
    )
    assert metrics["eval_accuracy_within_budget"] == 0.8
    wer = {"eval_wer": 0.3}
    BudgetMetricCallback(mm, "wer", 0.0, greater_is_better=False).on_evaluate(
        None, None, None, metrics=wer
    )
    assert wer["eval_wer_within_budget"] == math.inf  # lower is better: the worst is +inf


def test_restarts_chosen_on_small_validation_are_warned_about():
    assert restarts_warning(1, 3) is None  # no choice made
    assert restarts_warning(3, LAST_CHECKPOINT_BELOW) is None
    assert "--best_of 3 chooses among restarts on 48 validation clips" in restarts_warning(3, 48)


def test_small_validation_keeps_the_last_checkpoint_and_says_why(tmp_path):
    assert checkpoint_rule("auto", LAST_CHECKPOINT_BELOW - 1)[0] == "last"
    rule, reason = checkpoint_rule("auto", LAST_CHECKPOINT_BELOW)
    assert rule == "best" and f"{LAST_CHECKPOINT_BELOW} clips" in reason
    assert checkpoint_rule("best", 3) == ("best", "--checkpoint best")
    assert checkpoint_rule("average", 300)[0] == "average"
    with pytest.raises(ValueError, match="give one of auto, best, last, average"):
        checkpoint_rule("median", 3)
    state = TrainerState(global_step=30, best_metric=0.7)
    state.best_model_checkpoint = str(tmp_path / "checkpoint-10")
    state.log_history = [{"eval_accuracy_within_budget": 0.7, "step": 10},
                         {"loss": 1.0, "step": 20},
                         {"eval_accuracy_within_budget": -math.inf, "step": 30}]  # fmt: skip
    args = TrainingArguments(tmp_path, eval_strategy="steps", save_strategy="steps",
                             metric_for_best_model="accuracy_within_budget", report_to=[])  # fmt: skip
    best = dataclasses.replace(args, load_best_model_at_end=True)
    assert kept_checkpoint(state, best) == {"rule": "best", "step": 10, "score": 0.7, "met": True}
    # The last state drifted off the budget: kept, but not counted as meeting it.
    assert kept_checkpoint(state, args) == {"rule": "last", "step": 30, "score": None, "met": False}
    state.log_history[-1]["eval_accuracy_within_budget"] = 0.6
    assert kept_checkpoint(state, args) == {"rule": "last", "step": 30, "score": 0.6, "met": True}
    # An average is scored by the evaluation run on it, the last one.
    averaged = {"rule": "average", "step": 30, "score": 0.6, "met": True, "averaged": 3}
    assert kept_checkpoint(state, args, averaged=3) == averaged
    assert describe_kept(averaged) == "the average of 3 checkpoints up to step 30"


def test_an_encoder_loaded_from_a_seq2seq_checkpoint_is_one_line(tmp_path, caplog):
    config = tiny_whisper().config
    WhisperForConditionalGeneration(config).save_pretrained(tmp_path / "seq2seq")
    with caplog.at_level(logging.INFO, logger="hf_keepwhat"):
        load_pretrained(WhisperForAudioClassification, str(tmp_path / "seq2seq"), num_labels=3)
    lines = [r for r in caplog.records if r.name.startswith("hf_keepwhat")]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "decoder weights of the checkpoint left out" in lines[0].getMessage()
    assert "classifier, projector" in lines[0].getMessage()
    # Encoder weights missing is not expected: reported in full, as a warning.
    caplog.clear()
    other = WhisperConfig(**{**config.to_dict(), "encoder_layers": 4})
    with caplog.at_level(logging.INFO, logger="hf_keepwhat"):
        load_pretrained(WhisperForAudioClassification, str(tmp_path / "seq2seq"), config=other)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("missing keys" in w and "encoder.layers.3" in w for w in warnings), warnings


def test_the_run_folder_refuses_other_arguments_and_restarts(tmp_path):
    folder = RunFolder(str(tmp_path), "a", restart=False, main=True)
    folder.finish("baseline", {"metrics": {"accuracy": 1.0}})
    again = RunFolder(str(tmp_path), "a", restart=False, main=True)
    assert again.done("baseline") == {"metrics": {"accuracy": 1.0}}
    assert again.done("target0.50") is None
    with pytest.raises(ValueError, match="other arguments"):
        RunFolder(str(tmp_path), "b", restart=False, main=True)
    fresh = RunFolder(str(tmp_path), "b", restart=True, main=True)
    assert fresh.done("baseline") is None and not (tmp_path / "baseline").exists()


def test_per_layer_probes_leave_the_model_as_it_was_and_ties_go_shallow():
    from transformers import WhisperFeatureExtractor

    from hf_keepwhat.tasks import AudioCollator
    from hf_keepwhat.tasks.depth import layer_probes, select_last_layer

    torch.manual_seed(0)
    model = tiny_whisper()
    extractor = WhisperFeatureExtractor(feature_size=16, chunk_length=1)
    rng = torch.Generator().manual_seed(0)
    rows = [
        {"input_features": torch.randn(16, 100, generator=rng).numpy(), "labels": i % 3}
        for i in range(24)
    ]
    data = Dataset.from_list(rows).with_format("numpy")
    config = MaskConfig(max_input_seconds=1)
    table = layer_probes(model, config, data, data, AudioCollator(extractor))
    assert [r["last_layer"] for r in table] == [2, 1, 0]
    assert table[0]["macs_removed_fraction"] == 0 < table[1]["macs_removed_fraction"]
    assert all(0 <= r["validation_accuracy"] <= 1 for r in table)
    assert len(model.encoder.layers) == 3 and model.config.max_source_positions == 50
    tied = [{"last_layer": k, "validation_accuracy": a} for k, a in ((2, 0.9), (1, 0.9), (0, 0.5))]
    assert select_last_layer(tied) == 1
    assert all(0 <= r["cv_accuracy"] <= 1 and r["cv_standard_error"] >= 0 for r in table)


def test_the_cross_validated_depth_keeps_the_budgets_cut_unless_another_clearly_wins():
    from hf_keepwhat.tasks.depth import select_depth_cross_validated

    def rows(*values):  # (last layer, MACs dropped, folds' mean, standard error)
        keys = ("last_layer", "macs_removed_fraction", "cv_accuracy", "cv_standard_error")
        return [dict(zip(keys, v, strict=True)) for v in values]

    table = rows(
        (3, 0.0, 0.70, 0.02), (2, 0.23, 0.74, 0.02), (1, 0.46, 0.73, 0.02), (0, 0.69, 0.745, 0.02)
    )
    # The budget's cut (layer 1): neither layer 2 nor layer 0 beats it by more than the error.
    assert select_depth_cross_validated(table, removable=0.5) == 1
    assert select_depth_cross_validated(table) == 0  # no MACs budget: the cheapest cut
    clear = rows(
        (3, 0.0, 0.70, 0.02), (2, 0.23, 0.74, 0.02), (1, 0.46, 0.73, 0.02), (0, 0.69, 0.80, 0.02)
    )
    assert select_depth_cross_validated(clear, removable=0.5) == 0  # by more than its error
    shallower = rows((2, 0.23, 0.80, 0.02), (1, 0.46, 0.73, 0.03), (0, 0.69, 0.72, 0.01))
    assert select_depth_cross_validated(shallower, removable=0.5) == 2  # keeps a layer, clearly
    tie = rows((3, 0.0, 0.74, 0.01), (2, 0.23, 0.74, 0.01))
    assert select_depth_cross_validated(tie, removable=0.5) == 2  # the shallowest among ties


def test_cross_validation_uses_every_clip_and_fewer_folds_for_a_rare_class():
    from hf_keepwhat.tasks.depth import cross_validated_accuracy

    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 20 + [2] * 3)
    features = rng.normal(size=(43, 4)) + labels[:, None] * 3.0  # separable
    mean, error = cross_validated_accuracy((features, labels), folds=5, seed=0)
    assert mean > 0.9 and 0 <= error < 0.05


def test_spectral_augment_is_bounded_seeded_and_leaves_the_input_alone():
    from hf_keepwhat.tasks.augment import AugmentingCollator, SpectralAugment

    features = torch.rand(4, 80, 100)
    eq_only = SpectralAugment(eq_db=6.0, freq_mask=0, time_mask=0, seed=1)(features)
    offset = eq_only - features
    assert offset.abs().max() <= 6.0 / 40 + 1e-6 and offset.abs().max() > 0
    assert torch.allclose(offset, offset[:, :, :1].expand_as(offset), atol=1e-6)  # a gain per bin
    a = SpectralAugment(seed=3)(features)
    assert torch.equal(a, SpectralAugment(seed=3)(features))  # its own generator: reproducible
    assert not torch.equal(a, SpectralAugment(seed=4)(features))
    masked = SpectralAugment(eq_db=0.0, freq_mask=20, time_mask=20, seed=0)(features)
    assert (masked == features.amin()).any() and torch.equal(features, features.clone())

    def collate(examples):
        return {"input_features": torch.stack([e["input_features"] for e in examples])}

    batch = AugmentingCollator(collate, SpectralAugment(seed=0))([{"input_features": features[0]}])
    assert batch["input_features"].shape == (1, 80, 100)
