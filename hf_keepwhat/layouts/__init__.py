"""Registry of layouts by `config.model_type`: the only place that knows architectures."""

from __future__ import annotations

from torch import nn

from ..modeling_pruned import MODEL_TYPE_PREFIX
from .ast import ASTLayout
from .base import Layout
from .conformer import ConformerLayout
from .wav2vec2 import Wav2Vec2Layout
from .whisper import WhisperLayout

LAYOUTS: dict[str, Layout] = {}
for _layout in (Wav2Vec2Layout(), ConformerLayout(), WhisperLayout(), ASTLayout()):
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


def get_layout(model: nn.Module) -> Layout:
    """Returns the layout of `model`, chosen by `model.config.model_type`.

    Args:
        model: A transformers model.
    """
    return layout_for_config(getattr(model, "config", None), type(model).__name__)
