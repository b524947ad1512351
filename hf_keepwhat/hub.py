"""Publishing artifacts to the Hugging Face Hub with huggingface_hub."""

from __future__ import annotations

import tempfile
from collections.abc import Callable

from huggingface_hub import HfApi, constants, get_token


def push_folder(
    save: Callable[[str], None],
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    **upload_kwargs,
):
    """Saves an artifact into a temporary folder and uploads it as one commit.

    Args:
        save: Writes the artifact (weights, configs, model card) into the folder it is given.
        repo_id: The Hub repository, e.g. `"me/whisper-tiny-digits-keep50"`.
        private: Create the repository as private (public by default).
        token: Hub token; default: the one `hf auth login` stored.
        **upload_kwargs: Passed to `HfApi.upload_folder` (`commit_message`, `revision`, ...).
    """
    if constants.is_offline_mode():
        raise RuntimeError(
            f"Cannot push to {repo_id}: HF_HUB_OFFLINE is set, so the Hub is not contacted. "
            "Unset HF_HUB_OFFLINE on a machine that reaches huggingface.co."
        )
    token = token or get_token()
    if not token:
        raise RuntimeError(
            f"Cannot push to {repo_id}: not logged in to the Hugging Face Hub. Run "
            "`hf auth login`, set HF_TOKEN, or pass token=..."
        )
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    upload_kwargs.setdefault("commit_message", "Upload with hf_keepwhat")
    with tempfile.TemporaryDirectory() as folder:
        save(folder)
        return api.upload_folder(repo_id=repo_id, folder_path=folder, **upload_kwargs)
