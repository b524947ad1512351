"""Plain PyTorch CNNs (not transformers models): channel chains found by graph analysis, exact
pruning, refusal of channels whose removal would not be exact, save/load of the pruned module."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hf_keepwhat import MaskConfig, get_mask_model, load_pruned_module, save_pruned_module
from hf_keepwhat.channel_graph import find_chains
from hf_keepwhat.profiling import count_macs, count_params


class TinyCNN14(nn.Module):
    """CNN14's structure at toy width: conv-BN-ReLU pairs with pooling and dropout, a depthwise
    separable block, mean over frequency, max + mean over time, then an MLP head."""

    def __init__(self, width=8, classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.depthwise = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.norm = nn.GroupNorm(width, width)  # one group per channel: per-channel
        self.pointwise = nn.Conv2d(width, 2 * width, 1)
        self.fc1 = nn.Linear(2 * width, 12)
        self.fc_out = nn.Linear(12, classes)

    def forward(self, spectrogram):
        x = spectrogram[:, None]  # (batch, 1, time, mel)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.dropout(F.avg_pool2d(x, 2), p=0.2, training=self.training)
        x = F.gelu(self.norm(self.depthwise(x)))
        x = F.relu(self.pointwise(x)) * 0.5
        x = x.mean(dim=3)
        x = x.max(dim=2).values + x.mean(dim=2)
        return self.fc_out(F.relu(self.fc1(x)))


def _inputs(batch=2):
    return {"spectrogram": torch.randn(batch, 16, 12)}


def _randomise_norms(model):
    """Non-trivial norm statistics and affine parameters, so channel slicing errors show."""
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(module.weight)
            nn.init.normal_(module.bias)
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)


def _masked_tiny_cnn(seed):
    model = TinyCNN14()
    _randomise_norms(model)
    mm = get_mask_model(model, MaskConfig(target_sparsity=0.0), example_inputs=_inputs())
    generator = torch.Generator().manual_seed(seed)
    for group in mm.unit_groups:
        count = int(torch.randint(1, group.num_units + 1, (1,), generator=generator))
        mm.set_kept(group.name, torch.randperm(group.num_units, generator=generator)[:count])
    mm.set_kept("conv2.channels", [])  # a whole conv layer's outputs removed
    return mm.eval()


def test_finds_the_cnn14_chains():
    mm = _masked_tiny_cnn(0)
    chains = {g.name: (g.kind, g.consumers, g.norms, g.depthwise) for g in mm.unit_groups}
    assert chains == {
        "conv1.channels": ("conv", ["conv2"], ["bn1"], []),
        "conv2.channels": ("conv", ["pointwise"], ["bn2", "norm"], ["depthwise"]),
        "pointwise.channels": ("conv", ["fc1"], [], []),
        "fc1.neurons": ("ffn", ["fc_out"], [], []),
    }
    assert mm.layout.refused == {"fc_out": "its channels are a model output"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pruned_plain_cnn_equals_masked_at_predicted_cost(seed, tmp_path):
    mm = _masked_tiny_cnn(seed)
    inputs = _inputs(batch=3)
    with torch.no_grad():
        masked = mm(**inputs)
        pruned = mm.prune()
        out = pruned(**inputs)
    assert type(pruned) is TinyCNN14
    assert (masked - out).abs().max().item() <= 1e-5

    report = mm.sparsity_report()["total"]
    assert count_params(pruned) == report["params_remaining"] < report["params_original"]
    # MACs are counted for the example inputs (batch 2).
    assert count_macs(pruned, _inputs()) == report["macs_remaining"]

    save_pruned_module(pruned, tmp_path / "pruned")
    loaded = load_pruned_module(TinyCNN14(), tmp_path / "pruned")
    with torch.no_grad():
        assert torch.equal(loaded(**inputs), out)
    assert loaded.keepwhat_record["report"]["total"] == report


def test_loading_into_another_class_names_the_saved_one(tmp_path):
    pruned = _masked_tiny_cnn(0).prune()
    save_pruned_module(pruned, tmp_path)
    with pytest.raises(ValueError, match="holds a pruned TinyCNN14"):
        load_pruned_module(nn.Sequential(nn.Conv1d(1, 1, 1)), tmp_path)


def test_masks_train_with_the_penalty_added_by_the_user():
    model = TinyCNN14()
    mm = get_mask_model(
        model,
        MaskConfig(target_sparsity=0.5, mask_learning_rate=0.1, modules_to_save=["fc_out"]),
        example_inputs=_inputs(),
    )
    assert mm.main_input_name == "spectrogram"
    trainable = {n for n, p in mm.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if n.startswith(("masks.", "model.fc_out."))}
    optimizer = torch.optim.Adam(mm.param_groups(learning_rate=1e-2))
    before = mm.realised_sparsity()
    for _ in range(60):
        logits = mm(**_inputs(batch=4))
        loss = F.cross_entropy(logits, torch.tensor([0, 1, 2, 3])) + mm.sparsity_penalty()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert before == 0.0
    assert mm.realised_sparsity() > 0.3


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv1d(4, 4, 3, padding=1)
        self.out = nn.Conv1d(4, 2, 1)

    def forward(self, x):
        y = self.conv1(x)
        return self.out(self.conv2(y) + y)


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(4, 3, 1)
        self.b = nn.Conv1d(4, 3, 1)
        self.out = nn.Conv1d(6, 2, 1)

    def forward(self, x):
        return self.out(torch.cat([self.a(x), self.b(x)], dim=1))


class CoupledNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 1)
        self.norm = nn.GroupNorm(2, 8)
        self.out = nn.Conv1d(8, 2, 1)

    def forward(self, x):
        return self.out(self.norm(self.conv(x)))


class FlattenHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 3, 1)
        self.fc = nn.Linear(3 * 5, 2)
        self.shared = nn.Conv1d(4, 4, 1)

    def forward(self, x):
        x = self.shared(self.shared(x))  # the same layer twice
        return self.fc(self.conv(x).flatten(1))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(4, 4, 1)
        self.grouped = nn.Conv1d(4, 4, 1, groups=2)
        self.out = nn.Conv1d(4, 2, 1)

    def forward(self, x):
        return self.out(self.grouped(self.conv(x)))


@pytest.mark.parametrize(
    ("module", "refused"),
    [
        (Residual(), {"conv1": "residual connection"}),
        (Concat(), {"a": "concatenation", "b": "concatenation"}),
        (CoupledNorm(), {"conv": "normalises groups of channels together"}),
        (FlattenHead(), {"conv": "merges the channels", "shared": "runs 2 times"}),
        (Grouped(), {"conv": "grouped convolution"}),
    ],
)
def test_refuses_channels_whose_removal_is_not_exact(module, refused):
    chains, found = find_chains(module, {"x": torch.randn(1, 4, 5)})
    assert chains == []
    for producer, reason in refused.items():
        assert reason in found[producer]


def test_nothing_prunable_is_an_error_with_the_reasons():
    with pytest.raises(ValueError, match="no prunable units.*a: a concatenation"):
        get_mask_model(Concat(), MaskConfig(), example_inputs=torch.randn(1, 4, 5))


def test_plain_module_without_example_inputs_says_what_to_pass():
    with pytest.raises(ValueError, match="pass example_inputs"):
        get_mask_model(TinyCNN14(), MaskConfig())


def test_example_inputs_for_a_supported_transformers_model_is_an_error():
    from tiny_models import FAMILIES

    build, input_name, shape = FAMILIES["wav2vec2"]
    with pytest.raises(ValueError, match="do not pass example_inputs"):
        get_mask_model(build(), MaskConfig(), example_inputs=torch.randn(*shape))


def test_frozen_batch_norms_stay_in_eval_mode_while_masks_train():
    model = TinyCNN14()
    _randomise_norms(model)
    running = model.bn1.running_mean.clone()
    mm = get_mask_model(model, MaskConfig(), example_inputs=_inputs()).train()
    assert mm.training and not model.conv1.training  # the frozen model runs in eval mode
    assert not model.bn1.training and not model.bn2.training
    mm(**_inputs(batch=4)).sum().backward()
    assert torch.equal(model.bn1.running_mean, running)


def test_plain_module_masks_round_trip_through_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    trained = _masked_tiny_cnn(0)
    with pytest.raises(ValueError, match="plain PyTorch model.*save_file"):
        trained.save_pretrained(tmp_path / "adapter")
    save_file(trained.state_dict(), tmp_path / "masks.safetensors")
    fresh = get_mask_model(TinyCNN14(), MaskConfig(target_sparsity=0.0), example_inputs=_inputs())
    fresh.load_state_dict(load_file(tmp_path / "masks.safetensors"))
    kept = fresh.kept_units()
    assert all(torch.equal(kept[n], v) for n, v in trained.kept_units().items())
