"""MaskModel: freezing, penalty, budgets, layer dropping and clear errors."""

import inspect

import pytest
import torch
from tiny_models import tiny_wav2vec2, tiny_whisper
from transformers import BertConfig, BertModel

from hf_keepwhat import MaskConfig, get_mask_model, supported_model_types


def test_backbone_frozen_head_and_masks_trainable():
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    trainable = {n for n, p in mm.named_parameters() if p.requires_grad}
    assert trainable
    for name in trainable:
        assert name.startswith(("masks.", "model.projector.", "model.classifier.")), name
    assert any(n.startswith("masks.") for n in trainable)
    assert any(n.startswith("model.classifier.") for n in trainable)


def test_forward_adds_penalty_and_reports_it():
    config = MaskConfig(target_sparsity=0.0, penalty_on="probability")
    mm = get_mask_model(tiny_whisper(), config)
    out = mm(input_features=torch.randn(2, 16, 100), labels=torch.tensor([0, 2]))
    assert torch.allclose(out.loss, out.task_loss + out.sparsity_penalty)
    assert out.sparsity_penalty > 0  # every unit starts at sigmoid(1) = 0.73 kept, target 1.0
    assert out.realised_sparsity == pytest.approx(0.0)
    assert "sparsity_penalty" not in out.keys()  # Trainer would take it for logits


def test_units_budget_is_the_papers_penalty():
    config = MaskConfig(budget="units", target_sparsity=0.5, penalty_weight=100.0)
    mm = get_mask_model(tiny_whisper(), config)
    with torch.no_grad():
        for mask in mm.masks.values():
            mask.logits.uniform_(-3, 3)
    means = torch.stack([m.keep_probability().mean() for m in mm.masks.values()])
    expected = 100.0 * (means.mean() - 0.5) ** 2
    assert torch.allclose(mm.sparsity_penalty(), expected)


@pytest.mark.parametrize(
    "mask_type, penalty_on",
    [
        ("straight_through", "auto"),  # "mask" for a params budget: the hard masks
        ("hard_concrete", "kept"),  # while it trains: what pruning keeps, not the samples
    ],
)
def test_mask_penalty_measures_realised_sparsity(mask_type, penalty_on):
    config = MaskConfig(
        budget="params",
        target_sparsity=0.4,
        penalty_weight=100.0,
        mask_type=mask_type,
        penalty_on=penalty_on,
    )
    mm = get_mask_model(tiny_whisper(), config).train()
    assert config.resolved_penalty_on() == ("mask" if penalty_on == "auto" else penalty_on)
    mm.set_kept("encoder.layers.1.ffn", [0, 1, 2])
    mm.set_kept("encoder.layers.2.heads", [1])
    expected = 100.0 * (0.4 - mm.realised_sparsity()) ** 2
    assert mm.sparsity_penalty().item() == pytest.approx(expected, rel=1e-5)
    mm.sparsity_penalty().backward()
    assert all(m.logits.grad is not None for m in mm.masks.values())


def test_params_budget_weighs_units_by_their_size():
    mm = get_mask_model(tiny_whisper(), MaskConfig(budget="params", target_sparsity=0.0))
    mm.set_kept("encoder.layers.0.heads", [])
    heads = next(g for g in mm.unit_groups if g.name == "encoder.layers.0.heads")
    total = mm.sparsity_report()["total"]
    assert (
        total["params_original"] - total["params_remaining"]
        == heads.num_units * mm.costs.per_unit[heads.name]["params"]
    )
    assert mm.realised_sparsity() == pytest.approx(total["params_removed_fraction"])


def test_forward_signature_is_the_wrapped_models():
    mm = get_mask_model(tiny_wav2vec2(), MaskConfig(target_sparsity=0.0))
    parameters = inspect.signature(mm.forward).parameters
    assert "input_values" in parameters and "labels" in parameters


def test_last_layer_drops_layers_above():
    model = tiny_whisper(use_weighted_layer_sum=True)
    mm = get_mask_model(model, MaskConfig(last_layer=0, target_sparsity=0.0))
    assert len(mm.model.encoder.layers) == 1
    assert mm.model.config.encoder_layers == 1
    assert mm.model.layer_weights.numel() == 2
    total = mm.sparsity_report()["total"]
    assert total["params_removed_fraction"] > 0.3  # two of three layers went before any mask
    out = mm(input_features=torch.randn(1, 16, 100))
    assert out.logits.shape == (1, 3)


def test_unsupported_model_lists_supported_types():
    model = BertModel(
        BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    )
    with pytest.raises(ValueError, match="does not support model type 'bert'") as info:
        get_mask_model(model, MaskConfig())
    for model_type in supported_model_types():
        assert model_type in str(info.value)


def test_unreachable_target():
    with pytest.raises(ValueError, match="cannot be reached.*at most"):
        get_mask_model(tiny_whisper(), MaskConfig(unit_kinds=["conv"], target_sparsity=0.9))


def test_unknown_group_name_and_bad_indices():
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    with pytest.raises(KeyError, match="No unit group named 'encoder.layers.9.heads'"):
        mm.set_kept("encoder.layers.9.heads", [0])
    with pytest.raises(IndexError, match=r"\[0, 4\)"):
        mm.set_kept("encoder.layers.0.heads", [7])


def test_unknown_module_to_save():
    with pytest.raises(ValueError, match="modules_to_save names 'head'"):
        get_mask_model(tiny_whisper(), MaskConfig(modules_to_save=["head"], target_sparsity=0.0))


def test_last_layer_out_of_range():
    with pytest.raises(ValueError, match="last_layer=5 but the model has 3 layers"):
        get_mask_model(tiny_whisper(), MaskConfig(last_layer=5))


def test_optimizer_groups_give_masks_their_own_rate(tmp_path):
    from transformers import TrainingArguments

    config = MaskConfig(target_sparsity=0.0, mask_learning_rate=0.05)
    mm = get_mask_model(tiny_whisper(), config)
    args = TrainingArguments(str(tmp_path), learning_rate=1e-3, weight_decay=0.01, report_to=[])
    optimizer_cls, kwargs = mm.optimizer_cls_and_kwargs(args)
    head, masks = kwargs["params"]
    assert (head["lr"], head["weight_decay"]) == (1e-3, 0.01)
    assert (masks["lr"], masks["weight_decay"]) == (0.05, 0.0)
    mask_ids = {id(p) for p in mm.masks.parameters()}
    assert {id(p) for p in masks["params"]} == mask_ids
    assert not mask_ids & {id(p) for p in head["params"]}
    optimizer_cls(**kwargs)  # builds


def test_lagrangian_multipliers_ascend_under_a_minimising_optimizer(tmp_path):
    from transformers import TrainingArguments

    config = MaskConfig(target_sparsity=0.5, budget_mode="lagrangian", mask_learning_rate=0.1)
    mm = get_mask_model(tiny_whisper(), config)
    assert "lagrange" in mm.state_dict()  # checkpoints and adapters carry the multipliers
    args = TrainingArguments(str(tmp_path), learning_rate=1e-3, report_to=[])
    optimizer_cls, kwargs = mm.optimizer_cls_and_kwargs(args)
    group = kwargs["params"][-1]
    assert group["params"] == [mm.lagrange] and not group.get("maximize")
    optimizer = optimizer_cls(**kwargs)
    for _ in range(3):  # every unit kept, target half: the gap is positive
        optimizer.zero_grad()
        mm.sparsity_penalty().backward()
        optimizer.step()
    assert mm.lagrange[0] > 0 and mm.lagrange[1] > 0  # ascent: the pull towards the target grows
    gap = 1.0 - 0.5  # nothing removed yet
    expected = mm.lagrange[0] * gap + mm.lagrange[1] * gap**2
    assert torch.allclose(mm.sparsity_penalty(), expected)


def test_lagrangian_refuses_a_maximising_group(tmp_path):
    config = MaskConfig(target_sparsity=0.5, budget_mode="lagrangian")
    mm = get_mask_model(tiny_whisper(), config)
    groups = mm.param_groups(1e-3)
    groups[-1]["maximize"] = True  # the old recipe: it would now make the multipliers descend
    with pytest.raises(ValueError, match="maximize=True"):
        mm.match_mask_learning_rate(torch.optim.Adam(groups))


def test_conv_units_on_ast_are_ignored_with_a_warning(caplog):
    from tiny_models import tiny_ast

    with caplog.at_level("WARNING"):
        mm = get_mask_model(tiny_ast(), MaskConfig(target_sparsity=0.0))
    assert "AST has no prunable conv channels" in caplog.text
    assert {g.kind for g in mm.unit_groups} == {"heads", "ffn"}
    with pytest.raises(ValueError, match="no prunable units of kinds \\['conv'\\]"):
        get_mask_model(tiny_ast(), MaskConfig(unit_kinds=["conv"], target_sparsity=0.0))


def test_frozen_backbone_runs_in_eval_mode_while_masks_train():
    from tiny_models import tiny_wav2vec2 as build

    # LayerDrop, dropout and SpecAugment all on: in training mode every forward differs.
    noisy = dict(layerdrop=0.5, hidden_dropout=0.3, mask_time_prob=0.5, mask_time_length=2)
    x = torch.randn(2, 1600)
    mm = get_mask_model(build(**noisy), MaskConfig(target_sparsity=0.0)).train()
    assert not mm.model.wav2vec2.training and mm.model.classifier.training
    torch.testing.assert_close(mm(input_values=x).logits, mm(input_values=x).logits)
    assert mm.training  # Trainer still sees a model in training mode

    old = MaskConfig(target_sparsity=0.0, backbone_train_mode=True)
    mm = get_mask_model(build(**noisy), old).train()
    assert mm.model.wav2vec2.training
    assert not torch.allclose(mm(input_values=x).logits, mm(input_values=x).logits)
