"""The mask adapter: a small config + one safetensors file of mask logits and the task head.

Not named `adapter_config.json`: transformers would take the folder for a PEFT adapter.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import OrderedDict

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys

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
from .pruning import AFTER_TRAINING, pruning_record

ADAPTER_CONFIG_FILE = "keepwhat_adapter_config.json"
ADAPTER_WEIGHTS_FILE = "keepwhat_adapter.safetensors"
OWNED_FILES = (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, "README.md")
# Fields every adapter config holds, and their types.
ADAPTER_FIELDS = {"model_class": str, "mask_config": dict, "unit_groups": list}
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
        "base_fingerprint": base_fingerprint(mm),
        **{k: record[k] for k in AFTER_TRAINING if k in record},
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
    if mm.mask_config.train_backbone:
        raise ValueError(
            "This MaskModel trained its backbone's weights (MaskConfig.train_backbone=True); a "
            "mask adapter holds masks + head only and could not reproduce them. Save the pruned "
            "model instead: mm.prune().save_pretrained(folder)."
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
            f"The adapter's model_class {name!r} is not a class hf_keepwhat supports "
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


def read_adapter_config(path: str) -> dict:
    """An adapter config, checked field by field: an adapter is data from anywhere, so a missing,
    extra or mistyped field is an error naming it, never a traceback from deeper down.

    Args:
        path: The `keepwhat_adapter_config.json` file.
    """
    saved = read_json(path)
    if not isinstance(saved, dict):
        raise ValueError(f"{path} holds {type(saved).__name__}, not an adapter config object.")
    for key, kind in ADAPTER_FIELDS.items():
        if not isinstance(saved.get(key), kind):
            raise ValueError(
                f"{path}: field {key!r} is {saved.get(key)!r}, not a {kind.__name__}; the adapter "
                "config is corrupt or was not written by hf_keepwhat."
            )
    for key in AFTER_TRAINING:  # optional: only adapters of masks refit or completed have them
        if saved.get(key) is not None and not isinstance(saved[key], dict):
            raise ValueError(
                f"{path}: field {key!r} is {saved[key]!r}, not an object; the adapter config is "
                "corrupt or was not written by hf_keepwhat."
            )
    for index, group in enumerate(saved["unit_groups"]):
        if not (
            isinstance(group, dict)
            and isinstance(group.get("name"), str)
            and type(group.get("num_units")) is int
        ):
            raise ValueError(f"{path}: unit_groups[{index}] is {group!r}, not a named unit group.")
    base_model_class(saved)
    base_model_kwargs(saved)
    try:
        MaskConfig.from_dict(saved["mask_config"])
    except (ValueError, TypeError) as e:
        raise ValueError(f"{path}: field 'mask_config' is not a valid MaskConfig: {e}") from e
    return saved


def load_adapter(
    mask_model_class: type, model: nn.Module, directory, allow_other_base=False, **hub_kwargs
):
    """Wraps `model` in a `mask_model_class` (a `MaskModel`) and restores the adapter saved in
    `directory`, after checking that the adapter was made for this model's class and shapes;
    on any failure the model is left as it was.

    Args:
        mask_model_class: The class to build (`MaskModel`), called as `cls(model, mask_config)`.
        model: The base model, freshly loaded.
        directory: A folder written by `save_adapter`, or a Hub repository id.
        allow_other_base: Load onto weights other than those the masks were trained on (their
            fingerprint differs) without a warning.
        **hub_kwargs: `revision`, `token`, `cache_dir`, `local_files_only` for a repository id.
    """
    directory = resolve_adapter(directory, **hub_kwargs)
    config_file = require_file(directory, ADAPTER_CONFIG_FILE, "hf_keepwhat mask adapter")
    weights_file = require_file(directory, ADAPTER_WEIGHTS_FILE, "hf_keepwhat mask adapter")
    saved = read_adapter_config(config_file)
    tensors = load_safetensors(weights_file)
    model_class = type(model).__name__
    if saved["model_class"] != model_class:
        raise ValueError(
            f"{directory} is a mask adapter for {saved['model_class']} "
            f"({saved.get('base_model')}); it cannot be applied to a {model_class}. Load the base "
            "model the adapter was trained on."
        )
    mm = mask_model_class(model, MaskConfig.from_dict(saved["mask_config"]))
    try:
        _check_groups(mm, saved, config_file)
        shapes = {k: tuple(v.shape) for k, v in mm.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in tensors.items()}
        check_shapes(shapes, found, weights_file, "the model")
        recorded = saved.get("base_fingerprint")
        if recorded and recorded != base_fingerprint(mm) and not allow_other_base:
            warnings.warn(
                f"{directory} was trained on other weights than this {model_class}'s (their "
                f"fingerprints differ; it records {saved.get('base_model')}): the masks may not "
                "fit them. Pass allow_other_base=True if that is intended.",
                stacklevel=3,
            )
        mm.load_state_dict(tensors, strict=True)
        for name in AFTER_TRAINING:  # so that pruning the loaded adapter records them too
            setattr(mm, name, saved.get(name))
    except BaseException:
        mm.unload()
        raise
    return mm


def _check_groups(mm, saved: dict, config_file: str) -> None:
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
            f"{type(mm.model).__name__} ({first}). Load the base model the adapter was trained "
            f"on ({saved.get('base_model')})."
        )


def base_fingerprint(mm) -> str:
    """A cheap checksum of the backbone weights the masks apply to: 16 evenly spaced values of
    every tensor (as float32, so fp16 weights and their fp32 copy agree), hashed in order."""
    digest = hashlib.sha256()
    for name, param in mm.layout.backbone.named_parameters():
        flat = param.detach().reshape(-1)
        if flat.numel():
            index = torch.linspace(0, flat.numel() - 1, 16).long().to(flat.device)
            digest.update(name.encode())
            digest.update(flat[index].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


class MaskAdapterMixin:
    """The file side of a `MaskModel` (as `PeftModel` is LoRA's): its state (masks + head, or
    everything that trains), save, load and publish its mask adapter."""

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        """The adapter's state: mask logits and the trainable head, not the frozen backbone,
        so `Trainer` checkpoints stay small and resume exactly."""
        full = super().state_dict(prefix=prefix, keep_vars=keep_vars)
        out = OrderedDict() if destination is None else destination
        for key, value in full.items():
            if key[len(prefix) :] in self._adapter_keys:
                out[key] = value
        if self.lagrange is not None and self.lagrange_rate != 1.0:  # the values, not / rate
            out[prefix + "lagrange"] = self.lagrange_multipliers().detach()
        return out

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Loads an adapter state (masks + head) as written by `state_dict`.

        Args:
            state_dict: The adapter state.
            strict: Raise when keys are missing or unexpected.
            assign: Passed to `nn.Module.load_state_dict`.
        """
        missing = sorted(self._adapter_keys - set(state_dict))
        unexpected = sorted(set(state_dict) - self._adapter_keys)
        if strict and (missing or unexpected):
            raise RuntimeError(
                f"The adapter state does not fit this MaskModel: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}. Was it saved from a different base model?"
            )
        known = {k: v for k, v in state_dict.items() if k in self._adapter_keys}
        if "lagrange" in known:
            known["lagrange"] = known["lagrange"] / self.lagrange_rate
        nn.Module.load_state_dict(self, known, strict=False, assign=assign)
        return _IncompatibleKeys(missing, unexpected)

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
        allow_other_base: bool = False,
    ):
        """Wraps `model` and restores a saved mask adapter exactly.

        Args:
            model: The base model the adapter was trained on, freshly loaded.
            adapter_path: A folder written by `save_pretrained`, or a Hub repository id.
            revision: Branch, tag or commit of the repository.
            token: Hub token for private repositories.
            cache_dir: The Hub cache to use.
            local_files_only: Read the Hub cache only (also when `HF_HUB_OFFLINE=1`).
            allow_other_base: No warning when `model`'s weights are not those the adapter was
                trained on (it records their fingerprint).
        """
        hub = {"revision": revision, "token": token, "cache_dir": cache_dir}
        hub["local_files_only"] = local_files_only
        return load_adapter(cls, model, adapter_path, allow_other_base, **hub)

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
