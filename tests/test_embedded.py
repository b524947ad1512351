"""Supported encoders inside any module (a MusicFM-like model around a `Wav2Vec2ConformerEncoder`,
a classifier of one's own around a `WhisperEncoder`, `Wav2Vec2Model` or WavLM), CLAP's audio tower
inside `ClapModel`, and `ClapAudioModelWithProjection`: heads, neurons and channels found, pruned
exactly, counted exactly, saved and loaded."""

import pytest
import torch
from test_artifacts import _job, _run_route
from test_clap import tiny_clap_audio
from test_pruning_equivalence import _random_masks
from tiny_models import WAV2VEC2_FAMILY, tiny_wav2vec2, tiny_wavlm, tiny_whisper
from torch import nn
from transformers import (
    ClapAudioModelWithProjection,
    ClapConfig,
    ClapModel,
    Wav2Vec2ConformerConfig,
)
from transformers.models.wav2vec2_conformer.modeling_wav2vec2_conformer import (
    Wav2Vec2ConformerEncoder,
)

from hf_keepwhat import (
    MaskConfig,
    count_macs,
    count_params,
    get_mask_model,
    load_pruned_module,
    save_pruned_module,
)


class MusicFMLike(nn.Module):
    """A research model's shape: a front end of its own, a conformer encoder, a classifier."""

    def __init__(self):
        super().__init__()
        config = Wav2Vec2ConformerConfig(
            **{**WAV2VEC2_FAMILY, "position_embeddings_type": "relative"},
            conv_depthwise_kernel_size=5,
        )
        self.frontend = nn.Linear(16, config.hidden_size)
        self.conformer = Wav2Vec2ConformerEncoder(config)
        self.classifier = nn.Linear(config.hidden_size, 3)

    def forward(self, features):
        hidden = self.conformer(self.frontend(features)).last_hidden_state
        return self.classifier(hidden.mean(1))


class OwnClassifier(nn.Module):
    """A classifier of one's own around a transformers model's encoder."""

    def __init__(self, encoder: nn.Module, width: int):
        super().__init__()
        self.encoder, self.classifier = encoder, nn.Linear(width, 3)

    def forward(self, **inputs):
        return self.classifier(self.encoder(**inputs).last_hidden_state.mean(1))


CASES = {
    "conformer-encoder": (MusicFMLike, {"features": (2, 40, 16)}, "conformer"),
    "whisper-encoder": (
        lambda: OwnClassifier(tiny_whisper().encoder, 32),
        {"input_features": (2, 16, 100)},
        "encoder",
    ),
    "wav2vec2-model": (
        lambda: OwnClassifier(tiny_wav2vec2().wav2vec2, 32),
        {"input_values": (2, 1600)},
        "encoder",
    ),
    "wavlm-model": (
        lambda: OwnClassifier(tiny_wavlm(do_stable_layer_norm=True).wavlm, 32),
        {"input_values": (2, 1600)},
        "encoder",
    ),
}


@pytest.mark.parametrize("last_layer", [None, 1])
@pytest.mark.parametrize("case", sorted(CASES))
def test_embedded_encoder_prunes_exactly_and_round_trips(case, last_layer, tmp_path):
    build, shapes, prefix = CASES[case]
    torch.manual_seed(0)
    mm = get_mask_model(build(), MaskConfig(target_sparsity=0.0, last_layer=last_layer))
    kinds = {g.kind for g in mm.unit_groups}
    assert {"heads", "ffn"} <= kinds and all(g.name.startswith(prefix) for g in mm.unit_groups)
    assert mm.model.classifier.weight.requires_grad  # the head trains
    mm.train()
    assert mm.model.classifier.training and not mm.model.get_submodule(prefix).training
    _random_masks(mm, torch.Generator().manual_seed(1))
    mm.eval()
    inputs = {k: torch.randn(*s) for k, s in shapes.items()}
    with torch.no_grad():
        masked = mm(**inputs)
        pruned = mm.prune()
        assert type(pruned) is type(mm.model)
        torch.testing.assert_close(pruned(**inputs), masked, atol=1e-4, rtol=1e-4)
    report = mm.sparsity_report()["total"]
    backbone = pruned.get_submodule(mm.layout.backbone_path)
    assert count_params(backbone) == report["params_remaining"] < report["params_original"]
    assert count_macs(backbone, mm.reference_inputs) == report["macs_remaining"]

    save_pruned_module(pruned, tmp_path)
    torch.manual_seed(0)
    loaded = load_pruned_module(build(), tmp_path)
    if last_layer is not None:  # a plain module has no config to carry the cut: the manifest does
        assert len(build().get_submodule(mm.layout.layers_path)) > last_layer + 1
        assert len(loaded.get_submodule(mm.layout.layers_path)) == last_layer + 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs), masked, atol=1e-4, rtol=1e-4)


def _tiny_clap() -> ClapModel:
    audio = tiny_clap_audio().config.to_dict()
    text = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=24, max_position_embeddings=32)  # fmt: skip
    model = ClapModel(ClapConfig(audio_config=audio, text_config=text, projection_dim=8)).eval()
    model.audio_model.load_state_dict(tiny_clap_audio().state_dict())
    return model


@pytest.mark.slow
def test_clap_model_prunes_its_audio_tower_and_loads_by_both_routes(tmp_path):
    torch.manual_seed(0)
    model = _tiny_clap()
    text_before = {k: v.clone() for k, v in model.text_model.state_dict().items()}
    mm = get_mask_model(model, MaskConfig(target_sparsity=0.0))
    assert all(g.name.startswith("audio_model.audio_encoder.") for g in mm.unit_groups)
    _random_masks_clap(mm)
    x = {"input_features": torch.randn(1, 1, 64, 16)}
    with torch.no_grad():
        masked = mm.model.get_audio_features(**x)
        pruned = mm.prune()
        torch.testing.assert_close(pruned.get_audio_features(**x), masked, atol=1e-4, rtol=1e-4)
    for key, value in pruned.text_model.state_dict().items():  # the text tower is untouched
        assert torch.equal(value, text_before[key])

    def audio(m, i):
        out = m.get_audio_features(**i)
        return out if isinstance(out, torch.Tensor) else out[0]

    job, expected = _job(tmp_path, "clap", pruned, x, "AutoModel", audio)
    job["method"] = "get_audio_features"
    assert "pruned" in (tmp_path / "clap" / "README.md").read_text()
    for route, module in (
        ("keepwhat", "hf_keepwhat.standalone"),
        ("remote", "transformers_modules"),
    ):
        (result,) = _run_route(route, [job], tmp_path)
        assert result["class"].startswith(module), result["class"]
        torch.testing.assert_close(result["output"], expected)


def _random_masks_clap(mm):
    generator = torch.Generator().manual_seed(3)
    for group in mm.unit_groups:
        count = int(torch.randint(1, group.num_units + 1, (1,), generator=generator))
        mm.set_kept(group.name, torch.randperm(group.num_units, generator=generator)[:count])
    mm.eval()


@pytest.mark.slow
def test_clap_audio_model_with_projection(tmp_path):
    torch.manual_seed(0)
    config = tiny_clap_audio().config
    model = ClapAudioModelWithProjection(config).eval()
    mm = get_mask_model(model, MaskConfig(target_sparsity=0.0))
    assert mm.layout.backbone_path == "audio_model.audio_encoder"
    _random_masks_clap(mm)
    x = {"input_features": torch.randn(2, 1, 64, 16)}
    with torch.no_grad():
        masked = mm(**x).audio_embeds
        pruned = mm.prune()
        torch.testing.assert_close(pruned(**x).audio_embeds, masked, atol=1e-4, rtol=1e-4)
    job, _ = _job(tmp_path, "m", pruned, x, "AutoModel", lambda m, i: m(**i)[0])
    # transformers has no Auto class for it: with hf_keepwhat, its own class loads it.
    loaded = type(pruned).from_pretrained(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**x).audio_embeds, masked, atol=1e-4, rtol=1e-4)
    (result,) = _run_route("remote", [job], tmp_path)  # AutoModel + trust_remote_code
    assert result["class"].endswith("KeepWhatClapAudioModelWithProjection")
    torch.testing.assert_close(result["output"], masked, atol=1e-4, rtol=1e-4)
