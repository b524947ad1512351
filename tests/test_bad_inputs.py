"""Bad inputs and faults: each is refused with an error that names the problem, and nothing is
changed or half-written."""

import json
import os
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
from tiny_models import tiny_wavlm, tiny_whisper
from transformers import AutoModelForAudioClassification, WhisperFeatureExtractor

from hf_keepwhat import MaskConfig, MaskModel, get_mask_model
from hf_keepwhat.adapter import ADAPTER_CONFIG_FILE
from hf_keepwhat.cli import main as keepwhat

MALICIOUS = """
import pathlib
pathlib.Path(__file__).with_name("CODE_RAN").write_text("yes")
from transformers import WhisperConfig as MaliciousConfig
"""


def _adapter_with(tmp_path, **changes):
    """A real adapter whose config was edited, and a base folder whose `auto_map` points to code
    that would leave a `CODE_RAN` file behind if anything imported it."""
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    mm.save_pretrained(tmp_path / "adapter")
    base = tmp_path / "base"
    mm.model.save_pretrained(base)
    config = json.loads((base / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.MaliciousConfig"}
    (base / "config.json").write_text(json.dumps(config))
    (base / "evil.py").write_text(MALICIOUS)
    path = tmp_path / "adapter" / ADAPTER_CONFIG_FILE
    saved = json.loads(path.read_text())
    saved.update(base_model=str(base), **changes)
    path.write_text(json.dumps(saved))
    return tmp_path / "adapter", base


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model_class": "AutoModelForAudioClassification"}, "not a class hf_keepwhat supports"),
        (  # what ran the base folder's code before: an Auto class told to trust remote code
            {
                "model_class": "AutoModelForAudioClassification",
                "head_config": {"num_labels": 3, "trust_remote_code": True},
            },
            "not a class hf_keepwhat supports",
        ),
        ({"model_class": "os.system"}, "not a class hf_keepwhat supports"),
        ({"head_config": {"num_labels": 3, "trust_remote_code": True}}, "not head settings"),
        ({"head_config": "trust_remote_code"}, "not head settings"),
    ],
)
def test_cli_prune_never_runs_code_an_adapter_names(tmp_path, capsys, changes, message):
    adapter, base = _adapter_with(tmp_path, **changes)
    with pytest.raises(SystemExit):
        keepwhat(["prune", str(adapter), str(tmp_path / "out")])
    assert message in capsys.readouterr().err
    assert not (base / "CODE_RAN").exists() and not (tmp_path / "out").exists()


def test_card_snippets_quote_names_as_python_strings(tmp_path):
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    pruned = mm.prune()
    repo_id = 'me/x") ; import os; os.system("echo pwned'
    card = pruned.model_card(repo_id=repo_id).content
    assert f"from_pretrained({json.dumps(repo_id)})" in card
    assert 'from_pretrained("me/x")' not in card
    with torch.no_grad():
        assert pruned(input_features=torch.randn(1, 16, 100)).logits.shape == (1, 3)


# ---- MaskConfig: every wrong value named, before anything is built -------------------------

BAD_CONFIGS = [
    ({"target_sparsity": "0.5"}, TypeError, "target_sparsity"),
    ({"target_sparsity": float("nan")}, ValueError, "target_sparsity"),
    ({"target_sparsity": 1.0}, ValueError, "target_sparsity"),
    ({"penalty_weight": float("nan")}, ValueError, "penalty_weight"),
    ({"penalty_weight": -1.0}, ValueError, "penalty_weight"),
    ({"mask_init": float("nan")}, ValueError, "mask_init"),
    ({"mask_init": "1"}, TypeError, "mask_init"),
    ({"mask_learning_rate": float("nan")}, ValueError, "mask_learning_rate"),
    ({"mask_learning_rate": 0.0}, ValueError, "mask_learning_rate"),
    ({"max_input_seconds": float("nan")}, ValueError, "max_input_seconds"),
    ({"max_input_seconds": -3}, ValueError, "max_input_seconds"),
    ({"last_layer": 1.5}, ValueError, "last_layer"),
    ({"last_layer": -1}, ValueError, "last_layer"),
    ({"last_layer": "2"}, TypeError, "last_layer"),
    ({"unit_kinds": "heads"}, TypeError, "unit_kinds"),
    ({"unit_kinds": ["heads", 3]}, TypeError, "unit_kinds"),
    ({"modules_to_save": "classifier"}, TypeError, "modules_to_save"),
    ({"budget": "flops"}, ValueError, "budget"),
    ({"budget": None}, ValueError, "budget"),
    ({"target_warmup_steps": 2.5}, ValueError, "target_warmup_steps"),
    ({"macs_input_seconds": float("inf")}, ValueError, "macs_input_seconds"),
    ({"backbone_train_mode": "yes"}, TypeError, "backbone_train_mode"),
    ({"distill_weight": -0.5}, ValueError, "distill_weight"),
    ({"distill_weight": "1"}, TypeError, "distill_weight"),
]


@pytest.mark.parametrize("fields, error, name", BAD_CONFIGS)
def test_mask_config_names_the_bad_field(fields, error, name):
    with pytest.raises(error, match=name):
        MaskConfig(**fields)


# ---- models: refused before anything changes, or restored when a later check fails ----------


def _snapshot(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "hooks": sum(len(m._forward_pre_hooks) for m in model.modules()),
        "config": model.config.to_dict() if hasattr(model, "config") else None,
        "modules": [type(m).__name__ for m in model.modules()],
        "attributes": sorted(vars(model)),
    }


def _assert_unchanged(model, snapshot):
    after = _snapshot(model)
    assert after["state"].keys() == snapshot["state"].keys()
    assert all(torch.equal(v, snapshot["state"][k]) for k, v in after["state"].items())
    for key in ("grad", "hooks", "config", "modules", "attributes"):
        assert after[key] == snapshot[key], key


def _whisper_generation():
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48,
                           num_mel_bins=16, max_source_positions=50, vocab_size=100,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2,
                           decoder_start_token_id=1)  # fmt: skip
    return WhisperForConditionalGeneration(config)


def _pruned_whisper():
    return get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0)).prune()


def _bert():
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=48, vocab_size=50))  # fmt: skip


BAD_MODELS = [
    (_whisper_generation, {}, ValueError, "WhisperForAudioClassification"),
    (_pruned_whisper, {}, ValueError, "pruned by hf_keepwhat already"),
    (_bert, {}, ValueError, "does not support model type 'bert'"),
    (lambda: torch.nn.Sequential(torch.nn.Linear(2, 2)), {}, ValueError, "example_inputs"),
    # Each of these fails after the window was cut, layers dropped or the wrap begun:
    (
        tiny_whisper,
        {"unit_kinds": ["conv"], "max_input_seconds": 1, "last_layer": 1},
        ValueError,
        "cannot be reached",
    ),  # fmt: skip
    (
        tiny_whisper,
        {"modules_to_save": ["nothere"], "max_input_seconds": 1, "last_layer": 0},
        ValueError,
        "nothere",
    ),  # fmt: skip
    (tiny_whisper, {"last_layer": 7}, ValueError, "last_layer=7 but the model has 3 layers"),
    (tiny_whisper, {"max_input_seconds": 3}, ValueError, "max_input_seconds=3"),
    (tiny_whisper, {"max_input_seconds": 0.25}, ValueError, "multiple of 0.02 s"),
    (
        lambda: tiny_wavlm(do_stable_layer_norm=True),
        {"unit_kinds": ["conv"], "target_sparsity": 0.9},
        ValueError,
        "cannot be reached",
    ),  # fmt: skip
]


@pytest.mark.parametrize("build, fields, error, message", BAD_MODELS)
def test_refused_models_are_left_as_they_were(build, fields, error, message):
    model = build()
    snapshot = _snapshot(model)
    with pytest.raises(error, match=message):
        get_mask_model(model, MaskConfig(**{"target_sparsity": 0.5, **fields}))
    _assert_unchanged(model, snapshot)


def test_a_mask_model_and_a_wrapped_model_are_refused_and_unload_restores():
    model = tiny_whisper()
    snapshot = _snapshot(model)
    mm = get_mask_model(model, MaskConfig(target_sparsity=0.0, max_input_seconds=1, last_layer=1))
    with pytest.raises(TypeError, match="MaskModel already"):
        get_mask_model(mm, MaskConfig())
    with pytest.raises(ValueError, match="already wrapped by a MaskModel"):
        get_mask_model(model, MaskConfig())
    with pytest.raises(TypeError, match="must be a MaskConfig"):
        get_mask_model(tiny_whisper(), {"target_sparsity": 0.5})
    assert mm.unload() is model
    _assert_unchanged(model, snapshot)
    get_mask_model(model, MaskConfig(target_sparsity=0.0))  # wrappable again


def test_bad_group_names_and_indices():
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    with pytest.raises(KeyError, match="No unit group named 'encoder.layers.9.heads'"):
        mm.set_kept("encoder.layers.9.heads", [0])
    with pytest.raises(IndexError, match=r"\[0, 4\)"):
        mm.set_kept("encoder.layers.0.heads", [4])


def test_half_precision_and_meta_models_wrap():
    for dtype in (torch.float16, torch.bfloat16):
        mm = get_mask_model(tiny_whisper().to(dtype), MaskConfig(target_sparsity=0.0))
        out = mm(input_features=torch.randn(1, 16, 100, dtype=dtype)).logits
        assert out.dtype == dtype and torch.isfinite(out.float()).all()
    with torch.device("meta"):
        model = tiny_whisper()
    mm = get_mask_model(model, MaskConfig(target_sparsity=0.5))
    assert mm.sparsity_report()["total"]["macs_original"] > 0  # counted on the meta device


# ---- adapters: data, checked field by field; a failed load leaves the base model alone --------


def _saved_adapter(tmp_path, **fields):
    torch.manual_seed(0)
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0, **fields))
    mm.set_kept("encoder.layers.0.heads", [1, 2])
    mm.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def _edit(folder, **changes):
    path = folder / ADAPTER_CONFIG_FILE
    saved = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            saved.pop(key)
        else:
            saved[key] = value
    path.write_text(json.dumps(saved))


BAD_ADAPTER_CONFIGS = [
    ({"unit_groups": None}, "'unit_groups'"),
    ({"mask_config": ["target_sparsity"]}, "'mask_config'"),
    ({"mask_config": {"target_sparsity": 0.5, "sparsity": 0.3}}, "sparsity"),
    ({"mask_config": {"target_sparsity": "half"}}, "target_sparsity"),
    ({"unit_groups": [{"name": 3}]}, r"unit_groups\[0\]"),
    ({"head_refit": [30, 0.001]}, "'head_refit'"),
    ({"model_class": "Wav2Vec2ForCTC"}, "cannot be applied to a WhisperForAudioClassification"),
]


@pytest.mark.parametrize("changes, message", BAD_ADAPTER_CONFIGS)
def test_bad_adapter_configs_are_named_and_change_nothing(tmp_path, changes, message):
    folder = _saved_adapter(tmp_path)
    _edit(folder, **changes)
    model = tiny_whisper()
    snapshot = _snapshot(model)
    with pytest.raises((ValueError, TypeError), match=message):
        MaskModel.from_pretrained(model, folder)
    _assert_unchanged(model, snapshot)


def test_adapter_for_another_shape_leaves_the_model_as_it_was(tmp_path):
    folder = _saved_adapter(tmp_path, max_input_seconds=1, last_layer=1)
    model = tiny_whisper(encoder_ffn_dim=40)  # other FFN width: found after wrapping
    snapshot = _snapshot(model)
    with pytest.raises(ValueError, match="another shape"):
        MaskModel.from_pretrained(model, folder)
    _assert_unchanged(model, snapshot)


def test_adapter_files_missing_truncated_or_half_saved(tmp_path):
    folder = _saved_adapter(tmp_path)
    weights = folder / "keepwhat_adapter.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        MaskModel.from_pretrained(tiny_whisper(), folder)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="keepwhat_adapter.safetensors is missing"):
        MaskModel.from_pretrained(tiny_whisper(), folder)
    (folder / ".keepwhat_incomplete").write_text("")
    with pytest.raises(ValueError, match="save was interrupted"):
        MaskModel.from_pretrained(tiny_whisper(), folder)


def test_adapter_on_other_base_weights_warns(tmp_path):
    folder = _saved_adapter(tmp_path)
    torch.manual_seed(0)
    same = tiny_whisper()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MaskModel.from_pretrained(same, folder)  # the weights it was trained on: no warning
    torch.manual_seed(1)
    with pytest.warns(UserWarning, match="fingerprints differ"):
        MaskModel.from_pretrained(tiny_whisper(), folder)
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MaskModel.from_pretrained(tiny_whisper(), folder, allow_other_base=True)


# ---- saved pruned models: shards, stale files, truncation, interrupted swaps ----------------


def test_sharded_saves_load_and_a_later_save_leaves_nothing_stale(tmp_path):
    pruned = _pruned_whisper()
    extractor = WhisperFeatureExtractor(feature_size=16, chunk_length=1)
    pruned.keepwhat_feature_extractor = extractor
    pruned.save_pretrained(tmp_path, max_shard_size="20KB")
    (tmp_path / "notes.txt").write_text("mine")  # a file of the user's survives re-saves
    assert (tmp_path / "model.safetensors.index.json").exists()
    x = torch.randn(1, 16, 100)
    loaded = AutoModelForAudioClassification.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_features=x).logits, pruned(input_features=x).logits)
    pruned.keepwhat_feature_extractor = None
    pruned.save_pretrained(tmp_path)
    names = sorted(os.listdir(tmp_path))
    assert "model.safetensors" in names and "notes.txt" in names
    assert not [n for n in names if n.startswith("model-") or n.endswith(".index.json")]
    assert "preprocessor_config.json" not in names  # the stale window would mislead
    AutoModelForAudioClassification.from_pretrained(tmp_path)


def test_truncated_pruned_weights_are_named(tmp_path):
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    mm.set_kept("encoder.layers.0.heads", [1])  # no stock config: hf_keepwhat's load route
    mm.prune().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        AutoModelForAudioClassification.from_pretrained(tmp_path)


def test_a_crash_at_the_swap_leaves_the_old_folder(tmp_path, monkeypatch):
    import hf_keepwhat.files as files

    folder = _saved_adapter(tmp_path)
    before = {n: (folder / n).read_bytes() for n in os.listdir(folder)}

    def crash(new, old):
        raise OSError("power cut")

    monkeypatch.setattr(files, "_exchange", crash)
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    with pytest.raises(OSError, match="power cut"):
        mm.save_pretrained(folder)
    assert {n: (folder / n).read_bytes() for n in os.listdir(folder)} == before
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_a_save_into_a_mount_point_is_marked_until_its_last_file(tmp_path, monkeypatch):
    # A mount point cannot be renamed (EXDEV): files move in one by one under a marker.
    import hf_keepwhat.files as files

    folder = _saved_adapter(tmp_path)
    real_ismount, real_replace = os.path.ismount, os.replace
    monkeypatch.setattr(
        files.os.path, "ismount", lambda p: str(p) == str(folder) or real_ismount(p)
    )
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    mm.set_kept("encoder.layers.0.heads", [3])
    mm.save_pretrained(folder)  # staged inside the mount point, then moved in
    assert sorted(os.listdir(folder)) == sorted(os.listdir(_saved_adapter(tmp_path / "fresh")))
    assert MaskModel.from_pretrained(tiny_whisper(), folder).kept_units()[
        "encoder.layers.0.heads"
    ].tolist() == [3]

    def power_cut(source, target):
        if os.path.dirname(str(target)) == str(folder):
            raise OSError("power cut")
        return real_replace(source, target)

    monkeypatch.setattr(files.os, "replace", power_cut)
    with pytest.raises(OSError, match="power cut"):
        mm.save_pretrained(folder)
    monkeypatch.setattr(files.os, "replace", real_replace)
    with pytest.raises(ValueError, match="save was interrupted"):
        MaskModel.from_pretrained(tiny_whisper(), folder)
    mm.save_pretrained(folder)  # a complete save clears the marker
    assert ".keepwhat_incomplete" not in os.listdir(folder)


# ---- audio files: every bad file named, never a decoder traceback ---------------------------


def _bad_wavs(tmp_path):
    good = (np.sin(np.arange(16000) / 10) * 0.5).astype(np.float32)
    sf.write(tmp_path / "good.wav", good, 16000, subtype="PCM_16")
    data = (tmp_path / "good.wav").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(data[: len(data) // 2])
    (tmp_path / "header_only.wav").write_bytes(data[:44])
    (tmp_path / "not_audio.wav").write_bytes(b"RIFF1234WAVEnot really audio")
    sf.write(tmp_path / "silent.wav", np.zeros(1600, dtype=np.float32), 16000)


@pytest.mark.parametrize(
    "name, message",
    [
        ("truncated.wav", "truncated.wav: the file is truncated"),
        ("header_only.wav", "header_only.wav: the audio cannot be decoded"),
        ("not_audio.wav", "not_audio.wav: the audio cannot be decoded"),
        ("silent.wav", "silent.wav: the audio is silent"),
    ],
)
def test_bad_audio_files_are_named(tmp_path, name, message):
    from datasets import Dataset

    from hf_keepwhat.tasks import AudioDataError, cast_audio, featurize

    _bad_wavs(tmp_path)
    files = [str(tmp_path / "good.wav"), str(tmp_path / name)]
    dataset = cast_audio(Dataset.from_dict({"audio": files, "label": [0, 1]}), "audio", 16000)
    extractor = WhisperFeatureExtractor(feature_size=16, chunk_length=1)
    with pytest.raises(AudioDataError, match=message):
        featurize(dataset, extractor, "audio", "label", ["0", "1"])
