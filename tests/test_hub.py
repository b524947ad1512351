"""Publishing: the files uploaded are the ones save_pretrained writes; clear errors otherwise."""

import os

import pytest
from huggingface_hub import HfApi, ModelCard
from tiny_models import tiny_whisper

from hf_keepwhat import MaskConfig, get_mask_model
from hf_keepwhat import hub as keepwhat_hub


def _masked():
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    mm.set_kept("encoder.layers.0.heads", [1, 3])
    return mm


@pytest.fixture
def fake_hub(monkeypatch):
    """Stands in for the Hub's two endpoints; records what would be created and uploaded."""
    calls = {}

    def create_repo(self, repo_id, *, private=False, exist_ok=False, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, "private": private, "exist_ok": exist_ok}

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls["repo_id"] = repo_id
        calls["files"] = {
            name: open(os.path.join(folder_path, name), "rb").read()
            for name in os.listdir(folder_path)
        }
        calls["card"] = ModelCard.load(os.path.join(folder_path, "README.md")).data.to_dict()
        calls["kwargs"] = kwargs
        return f"https://huggingface.co/{repo_id}"

    monkeypatch.setattr(keepwhat_hub.constants, "is_offline_mode", lambda: False)
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


@pytest.mark.parametrize("artifact", ["pruned", "adapter"])
def test_push_uploads_what_save_pretrained_writes(artifact, fake_hub, tmp_path):
    mm = _masked()
    obj = mm.prune() if artifact == "pruned" else mm
    obj.push_to_hub("me/tiny-keep", token="hf_test", commit_message="first")
    obj.save_pretrained(tmp_path, repo_id="me/tiny-keep")
    expected = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert fake_hub["files"] == expected
    assert fake_hub["create_repo"] == {
        "repo_id": "me/tiny-keep",
        "private": False,
        "exist_ok": True,
    }
    assert fake_hub["kwargs"]["commit_message"] == "first"
    tag = "pruned" if artifact == "pruned" else "mask-adapter"
    assert set(fake_hub["card"]["tags"]) == {"hf_keepwhat", tag}
    assert fake_hub["card"]["pipeline_tag"] == "audio-classification"


def test_push_offline_is_a_clear_error():
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE is set"):
        _masked().push_to_hub("me/tiny-keep")


def test_push_without_login_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(keepwhat_hub.constants, "is_offline_mode", lambda: False)
    monkeypatch.setattr(keepwhat_hub, "get_token", lambda: None)
    with pytest.raises(RuntimeError, match="not logged in"):
        _masked().prune().push_to_hub("me/tiny-keep")


def test_private_repo(fake_hub):
    _masked().push_to_hub("me/private-keep", private=True, token="hf_test")
    assert fake_hub["create_repo"]["private"] is True
