"""The Hugging Face Hub, through huggingface_hub: publishing artifacts, and resolving a repo id
to a local folder. The only module besides `cards` that may contact the Hub."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from huggingface_hub import HfApi, constants, get_token, snapshot_download
from huggingface_hub.errors import (
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


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


def resolve_folder(
    name_or_path,
    what: str,
    *,
    allow_patterns: list[str] | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
) -> str:
    """A local folder for `name_or_path`: the folder itself when it exists, else a snapshot of
    the Hub repository of that id (downloaded, or read from the cache when offline), as PEFT and
    transformers resolve what they load.

    Args:
        name_or_path: A local folder or a Hub repository id (`"org/name"`).
        what: What the folder holds, for error messages (e.g. "mask adapter").
        allow_patterns: Only these files of the repository are fetched.
        revision: Branch, tag or commit of the repository.
        token: Hub token for private repositories (default: the stored login).
        cache_dir: The Hub cache to use (default: huggingface_hub's).
        local_files_only: Never contact the Hub; read the cache only (also when
            `HF_HUB_OFFLINE=1`).
    """
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return path
    try:
        return snapshot_download(
            path,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            allow_patterns=allow_patterns,
        )
    except HFValidationError as e:
        raise FileNotFoundError(f"{path} is neither a folder nor a Hub repository id ({e}).") from e
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        raise FileNotFoundError(
            f"No folder {path!r}, and the {what} {path!r} is not in the Hub cache: download it "
            "once with network access (unset HF_HUB_OFFLINE), or pass the folder."
        ) from e
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise FileNotFoundError(
            f"No folder {path!r}, and no Hub repository {path!r} (revision {revision or 'main'}) "
            f"holds a {what}: check the id, the revision, and your token for private repositories."
        ) from e
