"""Artifacts: pruned models load by every applicable route; the mask adapter round-trips."""

import json
import os
import subprocess
import sys

import pytest
import torch
from tiny_models import tiny_hubert, tiny_wav2vec2, tiny_wavlm, tiny_whisper
from transformers import (
    AutoModelForAudioClassification,
    WhisperFeatureExtractor,
    WhisperForAudioClassification,
)

from hf_keepwhat import MaskConfig, MaskModel, PrunedModelMixin, get_mask_model
from hf_keepwhat.adapter import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE
from hf_keepwhat.runtime import KeepWhatWhisperFeatureExtractor

HERE = os.path.dirname(__file__)


def _nonuniform(build, input_name, shape, **config):
    """A pruned model whose shapes no stock config can describe (heads pruned, one block empty)."""
    mm = get_mask_model(build(), MaskConfig(target_sparsity=0.0, **config))
    heads = [g.name for g in mm.unit_groups if g.kind == "heads"]
    ffns = [g.name for g in mm.unit_groups if g.kind == "ffn"]
    mm.set_kept(heads[0], [0, 2])
    mm.set_kept(heads[1], [])
    mm.set_kept(ffns[2], [1, 5, 7])
    for group in mm.unit_groups:
        if group.kind == "conv":
            mm.set_kept(group.name, range(0, group.num_units, 2))
    return mm.prune(), {input_name: torch.randn(*shape)}


def _stock_whisper():
    """Only whole layers dropped and a shorter window: a stock config describes it."""
    mm = get_mask_model(
        tiny_whisper(max_source_positions=150),  # a 3 s window, cut to 1 s
        MaskConfig(target_sparsity=0.0, last_layer=1, max_input_seconds=1),
    )
    extractor = WhisperFeatureExtractor(feature_size=16, chunk_length=3)
    return mm.prune(feature_extractor=extractor), {"input_features": torch.randn(1, 16, 100)}


def _stock_wav2vec2():
    """Uniform FFN widths and per-layer conv channels: a stock config describes it."""
    mm = get_mask_model(tiny_wav2vec2(), MaskConfig(target_sparsity=0.0))
    for group in mm.unit_groups:
        if group.kind in ("ffn", "conv"):
            mm.set_kept(group.name, range(group.num_units // 2))
    return mm.prune(), {"input_values": torch.randn(1, 1600)}


def _run_route(route, jobs, tmp_path):
    jobs_file = tmp_path / f"jobs-{route}.json"
    jobs_file.write_text(json.dumps(jobs))
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "load_routes.py"), route, str(jobs_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(job["output"]) for job in jobs]


def _job(tmp_path, name, model, inputs, auto, reference):
    folder = tmp_path / name
    if not folder.exists():
        model.save_pretrained(folder)
    torch.save(inputs, tmp_path / f"{name}-inputs.pt")
    with torch.no_grad():
        expected = reference(model, inputs)
    return {
        "path": str(folder),
        "auto": auto,
        "inputs": str(tmp_path / f"{name}-inputs.pt"),
        "output": str(tmp_path / f"{name}-{auto}-out.pt"),
    }, expected


def _first_output(model, inputs):
    return model(**inputs)[0]


def _bare_output(model, inputs):
    return model.get_submodule(model.base_model_prefix)(**inputs)[0]


@pytest.mark.slow
def test_nonuniform_pruned_models_load_by_both_routes(tmp_path):
    cases = {
        "whisper": _nonuniform(tiny_whisper, "input_features", (1, 16, 100)),
        "wav2vec2": _nonuniform(tiny_wav2vec2, "input_values", (1, 1600)),
        "hubert": _nonuniform(tiny_hubert, "input_values", (1, 1600)),
        "wavlm": _nonuniform(tiny_wavlm, "input_values", (1, 1600)),
    }
    jobs, expected = [], []
    for name, (model, inputs) in cases.items():
        assert model.stock_config() is None
        job, reference = _job(
            tmp_path, name, model, inputs, "AutoModelForAudioClassification", _first_output
        )
        jobs.append(job)
        expected.append(reference)
    # A task model's folder also loads as the bare model, as stock checkpoints do.
    model, inputs = cases["wav2vec2"]
    job, reference = _job(tmp_path, "wav2vec2", model, inputs, "AutoModel", _bare_output)
    jobs.append(job)
    expected.append(reference)

    for route, module in (
        ("keepwhat", "hf_keepwhat.standalone"),
        ("remote", "transformers_modules"),
    ):
        for result, reference in zip(_run_route(route, jobs, tmp_path), expected, strict=True):
            assert result["class"].startswith(module), result["class"]
            assert (result["output"] - reference).abs().max().item() <= 1e-6


@pytest.mark.slow
def test_stock_expressible_pruning_loads_without_custom_code(tmp_path):
    jobs, expected = [], []
    for name, (model, inputs) in {
        "whisper": _stock_whisper(),
        "wav2vec2": _stock_wav2vec2(),
    }.items():
        assert model.stock_config() is not None
        job, reference = _job(
            tmp_path, name, model, inputs, "AutoModelForAudioClassification", _first_output
        )
        assert not (tmp_path / name / "modeling_keepwhat.py").exists()
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert "auto_map" not in config and not config["model_type"].startswith("keepwhat")
        jobs.append(job)
        expected.append(reference)
    for result, reference in zip(_run_route("stock", jobs, tmp_path), expected, strict=True):
        assert result["class"].startswith("transformers.models."), result["class"]
        assert (result["output"] - reference).abs().max().item() <= 1e-6

    whisper_config = json.loads((tmp_path / "whisper" / "config.json").read_text())
    assert (whisper_config["max_source_positions"], whisper_config["encoder_layers"]) == (50, 2)
    # The saved feature extractor pads to the shortened window, not to 30 s.
    extractor = WhisperFeatureExtractor.from_pretrained(tmp_path / "whisper")
    assert (extractor.chunk_length, extractor.nb_max_frames) == (1, 100)


@pytest.mark.slow
def test_a_window_of_half_a_second_saves_and_loads_with_its_feature_extractor(tmp_path):
    # Keyword spotting wants 0.5 s; the stock WhisperFeatureExtractor cannot pad to 8000 samples
    # (float sample counts), so the saved folder carries hf_keepwhat's own extractor class.
    audio = torch.randn(5000)  # shorter than the window: padded to it
    torch.save(audio, tmp_path / "audio.pt")
    base_extractor = WhisperFeatureExtractor(feature_size=16, chunk_length=1)
    nonuniform = get_mask_model(
        tiny_whisper(), MaskConfig(target_sparsity=0.0, max_input_seconds=0.5)
    )
    nonuniform.set_kept(nonuniform.unit_groups[1].name, [0, 3])
    layers_cut = get_mask_model(
        tiny_whisper(), MaskConfig(target_sparsity=0.0, max_input_seconds=0.5, last_layer=1)
    )
    jobs, expected = [], []
    for name, mm in {"nonuniform": nonuniform, "layers_cut": layers_cut}.items():
        pruned = mm.prune(feature_extractor=base_extractor)
        extractor = pruned.keepwhat_feature_extractor
        assert isinstance(extractor, KeepWhatWhisperFeatureExtractor)
        assert (extractor.n_samples, extractor.nb_max_frames) == (8000, 50)
        features = extractor(audio.numpy(), sampling_rate=16000, return_tensors="pt")
        assert features["input_features"].shape == (1, 16, 50)
        pruned.save_pretrained(tmp_path / name)
        assert (pruned.stock_config() is not None) == (name == "layers_cut")
        saved = json.loads((tmp_path / name / "preprocessor_config.json").read_text())
        assert saved["auto_map"] == {
            "AutoFeatureExtractor": "modeling_keepwhat.KeepWhatWhisperFeatureExtractor"
        }
        assert (tmp_path / name / "modeling_keepwhat.py").exists()  # beside a stock config too
        assert "trust_remote_code=True" in (tmp_path / name / "README.md").read_text()
        job, reference = _job(
            tmp_path, name, pruned, dict(features), "AutoModelForAudioClassification", _first_output
        )
        jobs.append({**job, "audio": str(tmp_path / "audio.pt")})
        expected.append(reference)
    for route, module in (("keepwhat", "hf_keepwhat.runtime"), ("remote", "transformers_modules")):
        for result, reference in zip(_run_route(route, jobs, tmp_path), expected, strict=True):
            assert result["extractor"].startswith(module), result["extractor"]
            assert (result["output"] - reference).abs().max().item() <= 1e-6


def test_stock_class_refuses_a_nonuniform_checkpoint(tmp_path):
    model, _ = _nonuniform(tiny_whisper, "input_features", (1, 16, 100))
    model.save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="mismatched_sizes"):
        WhisperForAudioClassification.from_pretrained(tmp_path)


def _saved_nonuniform(tmp_path):
    model, inputs = _nonuniform(tiny_whisper, "input_features", (1, 16, 100))
    model.save_pretrained(tmp_path)
    return model, inputs


def test_truncated_weights_name_the_file(tmp_path):
    _saved_nonuniform(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file"):
        AutoModelForAudioClassification.from_pretrained(tmp_path)


def test_config_shapes_disagreeing_with_weights(tmp_path):
    _saved_nonuniform(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    config["keepwhat_manifest"]["modules"]["encoder.layers.2.fc1"]["out_features"] = 4
    config["keepwhat_manifest"]["modules"]["encoder.layers.2.fc2"]["in_features"] = 4
    config_file.write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"does not match config\.json: encoder\.layers\.2\.fc1\.bias"
    ):
        AutoModelForAudioClassification.from_pretrained(tmp_path)


def test_missing_weights_file(tmp_path):
    _saved_nonuniform(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors is missing"):
        AutoModelForAudioClassification.from_pretrained(tmp_path)


def test_failed_save_leaves_the_previous_model_intact(tmp_path, monkeypatch):
    model, _ = _saved_nonuniform(tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}

    def broken_card(self, *args, **kwargs):
        raise OSError("disk full")

    model.set_card_info(metrics={"accuracy": 0.5})  # the new save would differ
    monkeypatch.setattr(PrunedModelMixin, "model_card", broken_card)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path)
    after = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert after == before
    assert not [p for p in os.listdir(tmp_path.parent) if p.startswith(f".{tmp_path.name}.tmp-")]


def test_card_records_what_was_kept(tmp_path):
    model, _ = _nonuniform(tiny_whisper, "input_features", (1, 16, 100))
    model.set_card_info(dataset="fsdd", metrics={"accuracy": 0.975}, license="mit")
    model.save_pretrained(tmp_path, repo_id="me/tiny-keep")
    card = (tmp_path / "README.md").read_text()
    assert "license: mit" in card and "- fsdd" in card and "hf_keepwhat" in card
    assert "| `encoder.layers.1` | - | 0/4 | 48/48 |" in card
    assert "| accuracy | 0.975 |" in card
    assert 'from_pretrained("me/tiny-keep", trust_remote_code=True)' in card


# ---- the mask adapter ---------------------------------------------------------------------


def _base_whisper(**overrides):
    torch.manual_seed(1234)  # the same "pretrained" weights every time
    return tiny_whisper(**overrides)


def _trained_looking_adapter():
    mm = get_mask_model(_base_whisper(), MaskConfig(target_sparsity=0.0))
    with torch.no_grad():
        for mask in mm.masks.values():
            mask.logits.uniform_(-2, 2)
        mm.model.classifier.weight.normal_()
    return mm


def test_adapter_round_trip(tmp_path):
    mm = _trained_looking_adapter()
    mm.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["README.md", ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE]
    )
    restored = MaskModel.from_pretrained(_base_whisper(), tmp_path)
    for name, kept in mm.kept_units().items():
        assert torch.equal(kept, restored.kept_units()[name])
    x = torch.randn(2, 16, 100)
    mm.eval()
    restored.eval()
    with torch.no_grad():
        assert torch.equal(mm(input_features=x).logits, restored(input_features=x).logits)


def test_adapter_for_another_model_is_refused(tmp_path):
    _trained_looking_adapter().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="adapter for WhisperForAudioClassification"):
        MaskModel.from_pretrained(tiny_wav2vec2(), tmp_path)
    with pytest.raises(ValueError, match="another shape"):
        MaskModel.from_pretrained(_base_whisper(encoder_attention_heads=2), tmp_path)


def test_corrupt_adapter_names_the_file(tmp_path):
    _trained_looking_adapter().save_pretrained(tmp_path)
    (tmp_path / ADAPTER_WEIGHTS_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(ValueError, match=f"{ADAPTER_WEIGHTS_FILE} is not a readable"):
        MaskModel.from_pretrained(_base_whisper(), tmp_path)
    (tmp_path / ADAPTER_CONFIG_FILE).write_text("{")
    with pytest.raises(ValueError, match=f"{ADAPTER_CONFIG_FILE} is not valid JSON"):
        MaskModel.from_pretrained(_base_whisper(), tmp_path)


def test_adapter_state_is_masks_and_head_only():
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    keys = set(mm.state_dict())
    assert keys and all(
        k.startswith(("masks.", "model.projector.", "model.classifier.")) for k in keys
    )
    with pytest.raises(RuntimeError, match="missing"):
        mm.load_state_dict({})


def test_card_inherits_the_base_models_license(tmp_path):
    base = tiny_whisper()
    base.save_pretrained(tmp_path / "base")
    (tmp_path / "base" / "README.md").write_text("---\nlicense: apache-2.0\n---\n# base\n")
    model = WhisperForAudioClassification.from_pretrained(tmp_path / "base")
    mm = get_mask_model(model, MaskConfig(target_sparsity=0.0))
    mm.set_kept("encoder.layers.0.ffn", [0, 1])
    mm.prune().save_pretrained(tmp_path / "pruned")
    card = (tmp_path / "pruned" / "README.md").read_text()
    assert "license: apache-2.0" in card


@pytest.mark.parametrize(
    "family",
    [
        "unispeech",
        "unispeech-sat",
        "sew",
        "data2vec-audio",
        "ast",
        "conformer-relative",
        "conformer-rotary",
        "wavlm",
    ],
)
def test_other_wav2vec2_family_models_round_trip(family, tmp_path):
    from tiny_models import FAMILIES

    build, input_name, shape = FAMILIES[family]
    model, inputs = _nonuniform(build, input_name, (1, *shape[1:]))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    with torch.no_grad():
        assert (loaded(**inputs).logits - model(**inputs).logits).abs().max().item() <= 1e-6
