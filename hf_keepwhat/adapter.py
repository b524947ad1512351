"""The mask adapter: a small config + one safetensors file of mask logits and the task head.

Not named `adapter_config.json`: transformers would take the folder for a PEFT adapter.
"""

from __future__ import annotations

import os

from safetensors.torch import save_file
from torch import nn

from .cards import render_card
from .config import MaskConfig
from .files import (
    atomic_directory,
    check_shapes,
    load_safetensors,
    read_json,
    require_file,
    write_json,
)
from .hub import push_folder, resolve_folder
from .layouts import AUTO_CLASS_OF
from .pruning import pruning_record

ADAPTER_CONFIG_FILE = "keepwhat_adapter_config.json"
ADAPTER_WEIGHTS_FILE = "keepwhat_adapter.safetensors"
OWNED_FILES = (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, "README.md")
# Config fields that shape the task head: loading the base model again needs them.
HEAD_CONFIG_KEYS = (
    "num_labels",
    "id2label",
    "label2id",
    "problem_type",
    "vocab_size",
    "pad_token_id",
)


def adapter_config(mm) -> dict:
    """The adapter's JSON config: what it was made for, its MaskConfig and unit groups.

    Args:
        mm: The `MaskModel`.
    """
    config = mm.model.config
    record = pruning_record(mm)
    return {
        **{k: record[k] for k in ("library", "version", "base_model", "base_model_revision")},
        "model_class": type(mm.model).__name__,
        "model_type": config.model_type,
        "head_config": {k: getattr(config, k) for k in HEAD_CONFIG_KEYS if hasattr(config, k)},
        "mask_config": mm.mask_config.to_dict(),
        "report": record["report"],
        "unit_groups": [
            {"name": g.name, "kind": g.kind, "num_units": g.num_units, "unit_width": g.unit_width}
            for g in mm.unit_groups
        ],
    }


def adapter_card(config: dict, repo_id: str | None = None):
    """The adapter's model card, rendered from its config (`adapter_config`).

    Args:
        config: The adapter config.
        repo_id: Hub id the card's loading snippet names.
    """
    auto = AUTO_CLASS_OF.get(config["model_class"], "AutoModel")
    num_labels = config.get("head_config", {}).get("num_labels")
    extra = f", num_labels={num_labels}" if auto == "AutoModelForAudioClassification" else ""
    return render_card(
        "mask_adapter.md", config, auto_class=auto, repo_id=repo_id, base_load_kwargs=extra
    )


def save_adapter(mm, directory, repo_id: str | None = None) -> None:
    """Writes `mm`'s adapter (config, masks + head, card) into `directory`, all or nothing.

    Args:
        mm: The `MaskModel`.
        directory: The folder.
        repo_id: Hub id the card's loading snippet names.
    """
    if not mm.is_transformers_model:
        raise ValueError(
            f"Mask adapter folders (with a Hub card) are for transformers models; "
            f"{type(mm.model).__name__} is a plain PyTorch model. Save its masks with "
            "safetensors.torch.save_file(mm.state_dict(), path) and restore them with "
            "mm.load_state_dict(safetensors.torch.load_file(path)); save the pruned model with "
            "hf_keepwhat.save_pruned_module."
        )
    config = adapter_config(mm)
    tensors = {k: v.detach().cpu().contiguous() for k, v in mm.state_dict().items()}
    card = adapter_card(config, repo_id)
    with atomic_directory(directory, OWNED_FILES) as staging:
        write_json(os.path.join(staging, ADAPTER_CONFIG_FILE), config)
        save_file(tensors, os.path.join(staging, ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})
        card.save(os.path.join(staging, "README.md"))


def resolve_adapter(name_or_path, **hub_kwargs) -> str:
    """The local folder of a mask adapter: a folder, or a Hub repo id (only the adapter's own
    files are fetched).

    Args:
        name_or_path: A folder written by `save_adapter`, or a Hub repository id.
        **hub_kwargs: `revision`, `token`, `cache_dir`, `local_files_only` (`hub.resolve_folder`).
    """
    return resolve_folder(
        name_or_path, "mask adapter", allow_patterns=list(OWNED_FILES), **hub_kwargs
    )


def base_model_class(saved: dict) -> str:
    """The stock model class an adapter config names, checked against the classes hf_keepwhat
    supports: an adapter is data, so it may only name one of them (never code to run)."""
    name = saved.get("model_class")
    if name not in AUTO_CLASS_OF:
        raise ValueError(
            f"The adapter names model class {name!r}, which is not one hf_keepwhat supports "
            f"({sorted(AUTO_CLASS_OF)}); it is corrupt or was not written by hf_keepwhat."
        )
    return name


def base_model_kwargs(saved: dict) -> dict:
    """The `from_pretrained` arguments that rebuild the adapter's task head: only the
    `HEAD_CONFIG_KEYS`, with the types a config gives them (never `trust_remote_code`)."""
    head = saved.get("head_config") or {}
    unknown = sorted(set(head) - set(HEAD_CONFIG_KEYS)) if isinstance(head, dict) else [head]
    if unknown:
        raise ValueError(
            f"The adapter's head_config holds {unknown}, which are not head settings "
            f"({HEAD_CONFIG_KEYS}); it is corrupt or was not written by hf_keepwhat."
        )
    return dict(head)


def load_adapter(mask_model_class: type, model: nn.Module, directory, **hub_kwargs):
    """Wraps `model` in a `mask_model_class` (a `MaskModel`) and restores the adapter saved in
    `directory`, after checking that the adapter was made for this model's class and shapes.

    Args:
        mask_model_class: The class to build (`MaskModel`), called as `cls(model, mask_config)`.
        model: The base model, freshly loaded.
        directory: A folder written by `save_adapter`, or a Hub repository id.
        **hub_kwargs: `revision`, `token`, `cache_dir`, `local_files_only` for a repository id.
    """
    directory = resolve_adapter(directory, **hub_kwargs)
    config_file = require_file(directory, ADAPTER_CONFIG_FILE, "hf_keepwhat mask adapter")
    weights_file = require_file(directory, ADAPTER_WEIGHTS_FILE, "hf_keepwhat mask adapter")
    saved = read_json(config_file)
    model_class = type(model).__name__
    if saved.get("model_class") != model_class:
        raise ValueError(
            f"{directory} is a mask adapter for {saved.get('model_class')} "
            f"({saved.get('base_model')}); it cannot be applied to a {model_class}. Load the base "
            "model the adapter was trained on."
        )
    mm = mask_model_class(model, MaskConfig.from_dict(saved["mask_config"]))
    expected = [(g.name, g.num_units) for g in mm.unit_groups]
    recorded = [(g["name"], g["num_units"]) for g in saved["unit_groups"]]
    if expected != recorded:
        first = next(
            (
                f"{r} in the adapter vs {e} in the model"
                for r, e in zip(recorded, expected, strict=False)
                if r != e
            ),
            f"{len(recorded)} groups in the adapter vs {len(expected)} in the model",
        )
        raise ValueError(
            f"{config_file} was made for a model of another shape than this "
            f"{model_class} ({first}). Load the base model the adapter was trained on "
            f"({saved.get('base_model')})."
        )
    tensors = load_safetensors(weights_file)
    shapes = {k: tuple(v.shape) for k, v in mm.state_dict().items()}
    check_shapes(shapes, {k: tuple(v.shape) for k, v in tensors.items()}, weights_file, "the model")
    mm.load_state_dict(tensors, strict=True)
    return mm


class MaskAdapterMixin:
    """The file side of a `MaskModel` (as `PeftModel` is LoRA's): save, load and publish its
    mask adapter."""

    def save_pretrained(self, save_directory, repo_id: str | None = None) -> None:
        """Writes the mask adapter: its config, masks + head (safetensors) and a model card.

        Args:
            save_directory: The folder; an earlier adapter there is replaced all at once.
            repo_id: Hub id the card's loading snippet names (else a placeholder).
        """
        save_adapter(self, save_directory, repo_id)

    @classmethod
    def from_pretrained(
        cls,
        model: nn.Module,
        adapter_path,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
    ):
        """Wraps `model` and restores a saved mask adapter exactly.

        Args:
            model: The base model the adapter was trained on, freshly loaded.
            adapter_path: A folder written by `save_pretrained`, or a Hub repository id.
            revision: Branch, tag or commit of the repository.
            token: Hub token for private repositories.
            cache_dir: The Hub cache to use.
            local_files_only: Read the Hub cache only (also when `HF_HUB_OFFLINE=1`).
        """
        hub = {"revision": revision, "token": token, "cache_dir": cache_dir}
        return load_adapter(cls, model, adapter_path, **hub, local_files_only=local_files_only)

    def push_to_hub(self, repo_id: str, *, private: bool = False, token: str | None = None, **kw):
        """Saves the mask adapter with its card and uploads it to the Hub.

        Args:
            repo_id: The Hub repository.
            private: Create the repository as private.
            token: Hub token; default: the one `hf auth login` stored.
            **kw: Passed to `HfApi.upload_folder`.
        """

        return push_folder(
            lambda d: self.save_pretrained(d, repo_id), repo_id, private, token, **kw
        )
