"""Artifacts by Hub repository id, resolved through huggingface_hub's cache exactly as a download
would leave them (`models--org--name/snapshots/<commit>` + `refs/<revision>`), offline."""

import os
import shutil

import pytest
import torch
from tiny_models import tiny_whisper
from transformers import AutoModelForAudioClassification

from hf_keepwhat import MaskConfig, MaskModel, get_mask_model
from hf_keepwhat.cli import main as keepwhat

COMMITS = {"main": "a" * 40, "v1": "b" * 40}


def _publish_to_cache(folder, cache, repo_id: str, revision: str = "main") -> None:
    """Places `folder`'s files in `cache` as the snapshot of `repo_id` at `revision`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMITS[revision]
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(COMMITS[revision])


def _trained_adapter(tmp_path, keep):
    torch.manual_seed(0)
    base = tiny_whisper()
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    mm = get_mask_model(base, MaskConfig(target_sparsity=0.0))
    mm.set_kept("encoder.layers.0.heads", keep)
    mm.save_pretrained(tmp_path / "adapter")
    return mm, base_state


def _base(state):
    model = tiny_whisper()
    model.load_state_dict(state)
    return model


def test_adapter_loads_by_repo_id_and_revision_offline(tmp_path):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    cache = tmp_path / "cache"
    mm, state = _trained_adapter(tmp_path / "a", [0, 1])
    _publish_to_cache(tmp_path / "a" / "adapter", cache, "org/masks")
    other, _ = _trained_adapter(tmp_path / "b", [3])
    _publish_to_cache(tmp_path / "b" / "adapter", cache, "org/masks", revision="v1")

    loaded = MaskModel.from_pretrained(_base(state), "org/masks", cache_dir=str(cache))
    assert loaded.kept_units()["encoder.layers.0.heads"].tolist() == [0, 1]
    tagged = MaskModel.from_pretrained(
        _base(state), "org/masks", revision="v1", cache_dir=str(cache)
    )
    assert tagged.kept_units()["encoder.layers.0.heads"].tolist() == [3]
    with pytest.raises(FileNotFoundError, match="not in the Hub cache"):
        MaskModel.from_pretrained(_base(state), "org/absent", cache_dir=str(cache))


def test_cli_prunes_and_reports_an_adapter_by_repo_id(tmp_path, capsys):
    cache = tmp_path / "cache"
    mm, state = _trained_adapter(tmp_path, [1, 2])
    base_folder = tmp_path / "base"
    mm.model.save_pretrained(base_folder)  # the adapter's base, on disk for the CLI
    _publish_to_cache(tmp_path / "adapter", cache, "org/masks")
    keepwhat(["prune", "org/masks", str(tmp_path / "pruned"), "--base", str(base_folder),
              "--cache_dir", str(cache)])  # fmt: skip
    pruned = AutoModelForAudioClassification.from_pretrained(tmp_path / "pruned")
    assert pruned.encoder.layers[0].self_attn.num_heads == 2
    capsys.readouterr()
    keepwhat(["report", "org/masks", "--cache_dir", str(cache)])
    out = capsys.readouterr().out
    assert out.startswith("adapter of") and "units kept:" in out


def test_pruned_model_loads_by_repo_id_offline(tmp_path):
    cache = tmp_path / "cache"
    mm, _ = _trained_adapter(tmp_path, [2])
    pruned = mm.prune()
    pruned.save_pretrained(tmp_path / "pruned")
    _publish_to_cache(tmp_path / "pruned", cache, "org/pruned")
    loaded = AutoModelForAudioClassification.from_pretrained("org/pruned", cache_dir=str(cache))
    x = torch.randn(1, 16, 100)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_features=x).logits, pruned(input_features=x).logits)
