"""Registry of layouts by `config.model_type`: the only place that knows architectures."""

from __future__ import annotations

from torch import nn

from ..modeling_pruned import MODEL_TYPE_PREFIX
from .ast import ASTLayout
from .base import Layout
from .clap import ClapAudioLayout
from .conformer import ConformerLayout
from .module import ModuleLayout
from .wav2vec2 import Wav2Vec2Layout
from .wavlm import WavLMLayout
from .whisper import WhisperLayout

LAYOUTS: dict[str, Layout] = {}
for _layout in (
    Wav2Vec2Layout(),
    ConformerLayout(),
    WhisperLayout(),
    ASTLayout(),
    ClapAudioLayout(),
    WavLMLayout(),
):
    for _model_type in _layout.model_types:
        LAYOUTS[_model_type] = _layout


def supported_model_types() -> list[str]:
    """Returns the `config.model_type` values hf_keepwhat can mask and prune."""
    return sorted(LAYOUTS)


def layout_for_config(config, what: str = "this model") -> Layout:
    """Returns the layout for a model config, chosen by `config.model_type`.

    Args:
        config: A transformers config.
        what: How to name the model in the error message.
    """
    model_type = getattr(config, "model_type", None)
    if isinstance(model_type, str):
        # A pruned model ("keepwhat-whisper") has its stock family's layout.
        model_type = model_type.removeprefix(MODEL_TYPE_PREFIX)
    if model_type not in LAYOUTS:
        raise ValueError(
            f"hf_keepwhat does not support model type {model_type!r} ({what}). "
            f"Supported model types: {', '.join(supported_model_types())}."
        )
    return LAYOUTS[model_type]


def get_layout(model: nn.Module, example_inputs=None) -> Layout:
    """Returns the layout of `model`: by `model.config.model_type` for a transformers model,
    found by graph analysis on `example_inputs` for a plain PyTorch model.

    Args:
        model: A transformers model of a supported type, or any `nn.Module`.
        example_inputs: For a plain `nn.Module` only: inputs of one forward pass (a dict of
            keyword arguments, a tensor or a tuple of tensors).
    """
    config = getattr(model, "config", None)
    if example_inputs is not None:
        if getattr(config, "model_type", None) in LAYOUTS:
            raise ValueError(
                f"{type(model).__name__} is a supported transformers model ({config.model_type}); "
                "its layout is known, so do not pass example_inputs."
            )
        return ModuleLayout(model, example_inputs)
    if config is None:
        raise ValueError(
            f"{type(model).__name__} is not a transformers model. To mask the conv channels of a "
            "plain PyTorch model, pass example_inputs=... (inputs of one forward pass) to "
            f"get_mask_model. Supported transformers model types: {', '.join(supported_model_types())}."
        )
    return layout_for_config(config, type(model).__name__)
