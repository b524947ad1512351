"""Weights that train: masks over a trainable backbone (`train_backbone`) and fine-tuning a pruned
model (`finetune`), with and without a distillation teacher."""

import copy
import logging

import pytest
import torch
from test_trainer import _synthetic_dataset, _training_args
from tiny_models import tiny_whisper
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_keepwhat import MaskConfig, SparsityCallback, WeightAverageCallback, get_mask_model
from hf_keepwhat.averaging import averaged_parameters
from hf_keepwhat.finetuning import DistillationTrainer, finetune
from hf_keepwhat.tasks.selection import BudgetMetricCallback, kept_checkpoint


def _backbone_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.encoder.named_parameters()}


def test_train_backbone_moves_backbone_masks_and_head_at_their_own_rates(tmp_path):
    config = MaskConfig(target_sparsity=0.5, train_backbone=True, backbone_learning_rate=1e-3)
    mm = get_mask_model(tiny_whisper(), config)
    before = _backbone_weights(mm.model)
    args = _training_args(tmp_path, max_steps=4, learning_rate=0.05, save_steps=4)
    trainer = Trainer(
        model=mm,
        args=args,
        train_dataset=_synthetic_dataset(),
        callbacks=[SparsityCallback(config)],
        optimizer_cls_and_kwargs=mm.optimizer_cls_and_kwargs(args),
    )
    trainer.train()
    rates = [g["initial_lr"] for g in trainer.optimizer.param_groups]
    assert rates[:2] == [0.05, 1e-3]  # the head's, then the backbone's
    after = _backbone_weights(mm.model)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    # The checkpoint holds the trained weights, so resuming (or the best checkpoint) restores them.
    state = mm.state_dict()
    assert any(k.startswith("model.encoder.layers.0") for k in state)
    pruned = mm.prune()
    assert pruned.config.keepwhat["mask_config"]["train_backbone"] is True
    with pytest.raises(ValueError, match="mm.prune\\(\\).save_pretrained"):
        mm.save_pretrained(tmp_path / "adapter")


class _BackboneMoved(TrainerCallback):
    """Records, after each optimizer step, whether the backbone differs from `before`."""

    def __init__(self, mm):
        self.mm, self.before, self.moved = mm, _backbone_weights(mm.model), []

    def on_step_end(self, args, state, control, **kwargs):
        after = _backbone_weights(self.mm.model)
        self.moved.append(any(not torch.equal(self.before[n], after[n]) for n in after))


def test_head_first_steps_hold_the_backbone_while_head_and_masks_train(tmp_path):
    config = MaskConfig(
        target_sparsity=0.5, train_backbone=True, backbone_learning_rate=1e-3, head_first_steps=2
    )
    mm = get_mask_model(tiny_whisper(), config)
    head = mm.model.classifier.weight.detach().clone()
    masks = copy.deepcopy(mm.masks.state_dict())
    moved = _BackboneMoved(mm)
    args = _training_args(tmp_path, max_steps=3, learning_rate=0.05, save_strategy="no")
    trainer = Trainer(
        model=mm,
        args=args,
        train_dataset=_synthetic_dataset(),
        callbacks=[SparsityCallback(config), moved],
        optimizer_cls_and_kwargs=mm.optimizer_cls_and_kwargs(args),
    )
    trainer.train()
    assert moved.moved == [False, False, True]
    assert not torch.equal(mm.model.classifier.weight, head)
    assert any(not torch.equal(masks[k], v) for k, v in mm.masks.state_dict().items())


def test_head_first_steps_must_be_a_count():
    with pytest.raises(ValueError, match="head_first_steps=-1"):
        MaskConfig(train_backbone=True, head_first_steps=-1)


def test_train_backbone_refuses_an_optimizer_at_the_heads_rate(tmp_path):
    config = MaskConfig(target_sparsity=0.5, train_backbone=True)
    mm = get_mask_model(tiny_whisper(), config)
    args = _training_args(tmp_path, max_steps=1, learning_rate=1e-3)
    trainer = Trainer(
        model=mm,
        args=args,
        train_dataset=_synthetic_dataset(),
        callbacks=[SparsityCallback(config)],
    )
    with pytest.raises(ValueError, match="optimizer_cls_and_kwargs"):
        trainer.train()


def test_train_backbone_refuses_distillation_from_itself():
    with pytest.raises(ValueError, match="teacher is the backbone itself"):
        MaskConfig(train_backbone=True, distill_weight=1.0)


def _pruned_tiny_whisper():
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.3, last_layer=1))
    mm.set_kept("encoder.layers.0.heads", [0, 2])
    return mm.prune()


def test_finetune_trains_every_weight_and_records_it(tmp_path):
    pruned = _pruned_tiny_whisper()
    before = copy.deepcopy(pruned.state_dict())
    data = _synthetic_dataset()
    args = TrainingArguments(
        str(tmp_path),
        max_steps=4,
        learning_rate=1e-3,
        per_device_train_batch_size=4,
        eval_strategy="steps",
        eval_steps=2,
        save_steps=2,
        load_best_model_at_end=True,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    out = finetune(pruned, args, data, eval_dataset=data)
    assert out is pruned and not out.training
    changed = [k for k, v in out.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("encoder.layers.0.self_attn") for k in changed)
    assert any(k.startswith("classifier") for k in changed)
    recovery = out.config.keepwhat["recovery"]
    assert recovery["method"] == "finetune" and recovery["steps"] == 4
    assert recovery["best_step"] in (2, 4)
    # The card says it was fine-tuned; the saved model loads back with the trained weights.
    out.save_pretrained(tmp_path / "saved")
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "every remaining weight was fine-tuned" in card


def test_distillation_adds_the_teachers_term_only_in_training(tmp_path):
    student = _pruned_tiny_whisper()
    teacher = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0, last_layer=1)).prune()
    data = _synthetic_dataset(8)
    args = _training_args(tmp_path, max_steps=1)
    plain = Trainer(model=student, args=args)
    distilled = DistillationTrainer(model=student, args=args, teacher=teacher, distill_weight=10.0)
    batch = {
        "input_features": torch.tensor(data["input_features"][:4]),
        "labels": torch.tensor(data["labels"][:4]),
    }
    student.train()
    task = plain.compute_loss(student, dict(batch))
    total = distilled.compute_loss(student, dict(batch))
    assert (
        float(total.detach()) > float(task.detach()) + 1e-3
    )  # pruned heads: moved from the teacher
    student.eval()
    assert torch.allclose(
        distilled.compute_loss(student, dict(batch)), plain.compute_loss(student, dict(batch))
    )
    with pytest.raises(ValueError, match="needs a teacher"):
        finetune(student, args, data, distill_weight=1.0)


def test_the_dense_reference_is_named_for_how_it_trained():
    from types import SimpleNamespace

    from hf_keepwhat.tasks.run import dense_kind

    trained, measured = SimpleNamespace(train_baseline=True), SimpleNamespace(train_baseline=False)
    assert dense_kind(trained, MaskConfig()) == "linear probe"
    assert dense_kind(trained, MaskConfig(train_backbone=True)) == "fine-tuned"
    assert dense_kind(measured, MaskConfig(train_backbone=True)) == "as loaded"


class _Snapshots(TrainerCallback):
    """Every parameter at each evaluation, by step."""

    def __init__(self):
        self.seen = {}

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.seen[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()}


class _StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step == self.step


def _averaged_run(folder, callbacks, resume=None, **changes):
    """Masks over a trainable tiny Whisper, 8 steps, evaluated and saved every 2."""
    config = MaskConfig(target_sparsity=0.5, train_backbone=True, backbone_learning_rate=1e-3)
    torch.manual_seed(0)
    mm = get_mask_model(tiny_whisper(), config)
    every = {"eval_strategy": "steps", "eval_steps": 2, "save_steps": 2, **changes}
    args = _training_args(folder, max_steps=8, learning_rate=0.05, seed=0,
                          metric_for_best_model="loss_within_budget", **every)  # fmt: skip
    data = _synthetic_dataset()
    budget = BudgetMetricCallback(mm, "loss", tolerance=1.0, greater_is_better=False)
    trainer = Trainer(model=mm, args=args, train_dataset=data, eval_dataset=data,
                      callbacks=[SparsityCallback(config), budget, *callbacks],
                      optimizer_cls_and_kwargs=mm.optimizer_cls_and_kwargs(args))  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_a_weight_average_is_the_mean_of_the_second_half_and_a_resumed_run_keeps_it(
    tmp_path, caplog
):
    snapshots, average = _Snapshots(), WeightAverageCallback()
    trainer = _averaged_run(tmp_path / "a", [snapshots, average])
    mm = trainer.model
    assert average.count == 3  # the evaluations at steps 4, 6 and 8
    kept = averaged_parameters(mm)
    assert kept and not any(n.startswith("masks.") for n in kept)
    for name, p in kept.items():
        mean = sum(snapshots.seen[step][name] for step in (4, 6, 8)) / 3
        torch.testing.assert_close(p.detach(), mean)
    # The masks are the last checkpoint's, not an average of choices.
    for name, p in mm.masks.named_parameters():
        assert torch.equal(p.detach(), snapshots.seen[8][f"masks.{name}"])
    trainer.remove_callback(snapshots)
    score = trainer.evaluate()["eval_loss"]
    assert average.count == 3  # scoring the average adds nothing to it
    # Its score is read from the history, where the budget's metric was written too.
    record = kept_checkpoint(trainer.state, trainer.args, averaged=average.count)
    assert record == {"rule": "average", "step": 8, "score": score, "met": True, "averaged": 3}
    # Killed after step 6's checkpoint, the resumed run goes on with the same average.
    _averaged_run(tmp_path / "b", [_StopAt(6), WeightAverageCallback()])
    resumed = WeightAverageCallback()
    again = _averaged_run(
        tmp_path / "b", [resumed], resume=str(tmp_path / "b" / "checkpoint-6")
    ).model
    assert resumed.count == 3
    for name, p in averaged_parameters(again).items():
        torch.testing.assert_close(p.detach(), kept[name].detach())
    # No evaluation at all: the last state, and the log says so.
    with caplog.at_level(logging.WARNING, logger="hf_keepwhat"):
        _averaged_run(tmp_path / "d", [WeightAverageCallback()], eval_strategy="no")
    assert "no evaluation in the last 50% of the run" in caplog.text
    with pytest.raises(ValueError, match="load_best_model_at_end=False"):
        _averaged_run(tmp_path / "c", [WeightAverageCallback()], load_best_model_at_end=True)
