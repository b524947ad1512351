"""Saving and loading a pruned plain PyTorch model (not a transformers model).

A plain module has no config to carry its new shapes, so the folder holds the weights and a JSON
file with the shape manifest. Loading builds the user's dense model as usual and applies the
manifest before the weights are loaded, as timm's `_prune.py` does.
"""

from __future__ import annotations

import os

from safetensors.torch import load_model, save_model
from torch import nn

from .files import atomic_directory, read_json, require_file, write_json
from .modeling_pruned import apply_manifest

MANIFEST_FILE = "keepwhat_pruned.json"
WEIGHTS_FILE = "model.safetensors"


def save_pruned_module(module: nn.Module, directory) -> None:
    """Writes a pruned plain module (from `MaskModel.prune()`): weights and shape manifest.

    Args:
        module: The pruned module; it carries `keepwhat_manifest` and `keepwhat_record`.
        directory: The folder; an earlier save there is replaced all at once.
    """
    manifest = getattr(module, "keepwhat_manifest", None)
    if manifest is None:
        raise ValueError(
            f"This {type(module).__name__} has no pruning manifest: save the module returned by "
            "MaskModel.prune() (transformers models save with save_pretrained instead)."
        )
    with atomic_directory(directory, (MANIFEST_FILE, WEIGHTS_FILE)) as staging:
        write_json(
            os.path.join(staging, MANIFEST_FILE),
            {
                "model_class": type(module).__name__,
                "manifest": manifest,
                "record": getattr(module, "keepwhat_record", {}),
            },
        )
        # save_model (not save_file) handles tensors shared between modules.
        save_model(module, os.path.join(staging, WEIGHTS_FILE))


def load_pruned_module(module: nn.Module, directory) -> nn.Module:
    """Shrinks a freshly built dense module to the saved shapes and loads the pruned weights.

    Args:
        module: The dense model, built the way the pruned one was before masking (its weights
            are replaced).
        directory: A folder written by `save_pruned_module`.
    """
    directory = os.fspath(directory)
    saved = read_json(require_file(directory, MANIFEST_FILE, "a pruned plain PyTorch model"))
    weights = require_file(directory, WEIGHTS_FILE, "a pruned plain PyTorch model")
    if saved["model_class"] != type(module).__name__:
        raise ValueError(
            f"{directory} holds a pruned {saved['model_class']}; build that model (dense) and "
            f"pass it instead of a {type(module).__name__}."
        )
    apply_manifest(module, saved["manifest"])
    load_model(module, weights, strict=True)
    module.keepwhat_manifest = saved["manifest"]
    module.keepwhat_record = saved["record"]
    return module.eval()
