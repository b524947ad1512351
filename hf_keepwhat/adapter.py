"""The mask adapter: a small config + one safetensors file of mask logits and the task head.

Not named `adapter_config.json`: transformers would take the folder for a PEFT adapter.
"""

from __future__ import annotations

import json
import os

from safetensors.torch import save_file
from torch import nn

from .cards import render_card
from .config import MaskConfig
from .files import atomic_directory, check_shapes, load_safetensors, read_json, require_file
from .version import __version__

ADAPTER_CONFIG_FILE = "keepwhat_adapter_config.json"
ADAPTER_WEIGHTS_FILE = "keepwhat_adapter.safetensors"
OWNED_FILES = (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, "README.md")


def _auto_class_name(model: nn.Module) -> str:
    name = type(model).__name__
    if name.endswith("ForCTC"):
        return "AutoModelForCTC"
    if name.endswith(("ForAudioClassification", "ForSequenceClassification")):
        return "AutoModelForAudioClassification"
    return "AutoModel"


def adapter_config(mm) -> dict:
    """The adapter's JSON config: what it was made for, its MaskConfig and unit groups.

    Args:
        mm: The `MaskModel`.
    """
    config = mm.model.config
    return {
        "library": "hf_keepwhat",
        "version": __version__,
        "base_model": getattr(config, "_name_or_path", None) or None,
        "base_model_revision": getattr(config, "_commit_hash", None),
        "model_class": type(mm.model).__name__,
        "model_type": config.model_type,
        "num_labels": getattr(config, "num_labels", None),
        "mask_config": mm.mask_config.to_dict(),
        "unit_groups": [
            {"name": g.name, "kind": g.kind, "num_units": g.num_units, "unit_width": g.unit_width}
            for g in mm.unit_groups
        ],
    }


def save_adapter(mm, directory, repo_id: str | None = None) -> None:
    """Writes `mm`'s adapter (config, masks + head, card) into `directory`, all or nothing.

    Args:
        mm: The `MaskModel`.
        directory: The folder.
        repo_id: Hub id the card's loading snippet names.
    """
    config = adapter_config(mm)
    tensors = {k: v.detach().cpu().contiguous() for k, v in mm.state_dict().items()}
    record = mm.pruning_record()
    auto = _auto_class_name(mm.model)
    extra = (
        f", num_labels={config['num_labels']}" if auto == "AutoModelForAudioClassification" else ""
    )
    card = render_card(
        "mask_adapter.md", record, auto_class=auto, repo_id=repo_id, base_load_kwargs=extra
    )
    with atomic_directory(directory, OWNED_FILES) as staging:
        with open(os.path.join(staging, ADAPTER_CONFIG_FILE), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
        save_file(tensors, os.path.join(staging, ADAPTER_WEIGHTS_FILE), metadata={"format": "pt"})
        card.save(os.path.join(staging, "README.md"))


def load_adapter(model: nn.Module, directory):
    """Wraps `model` in a `MaskModel` and restores the adapter saved in `directory`.

    Args:
        model: The base model, freshly loaded.
        directory: A folder written by `save_adapter`.
    """
    from .model import get_mask_model

    directory = os.fspath(directory)
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
    mm = get_mask_model(model, MaskConfig.from_dict(saved["mask_config"]))
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
