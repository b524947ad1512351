"""The family registry: every layout and the families it declares. Nothing outside `layouts/`
knows an architecture; pruned classes, Auto registration, saved modeling files and the CLI's
naming are all derived from `FAMILIES`.

A new architecture family is one new file here: a `Layout` subclass that declares its
`families`. Every module of this package is imported and every layout class that declares
families of its own is registered.
"""

from __future__ import annotations

import importlib
import pkgutil

from torch import nn

from ..config import MaskConfig
from ..runtime import MODEL_TYPE_PREFIX
from .base import Family, Layout
from .module import ModuleLayout
from .scoped import ScopedLayout


def _declared_layouts() -> tuple[type[Layout], ...]:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    found, todo = [], [Layout]
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        declared = cls.__dict__.get("families")  # its own, not a parent's (nor a scoped one's)
        if isinstance(declared, tuple) and declared:
            found.append(cls)
    return tuple(sorted(found, key=lambda cls: cls.__name__))


LAYOUTS: tuple[type[Layout], ...] = _declared_layouts()
#: `config.model_type` -> its `Family`, and the layout class that handles it.
FAMILIES: dict[str, Family] = {f.model_type: f for layout in LAYOUTS for f in layout.families}
LAYOUT_OF: dict[str, type[Layout]] = {
    f.model_type: layout for layout in LAYOUTS for f in layout.families
}
#: Stock model class name -> the Auto class that loads it.
AUTO_CLASS_OF: dict[str, str] = {
    name: auto for family in FAMILIES.values() for name, auto in family.models.items()
}


def supported_model_types() -> list[str]:
    """Returns the `config.model_type` values hf_keepwhat can mask and prune."""
    return sorted(FAMILIES)


def stock_model_type(config) -> str | None:
    """The stock family of a config: `config.model_type`, without the `keepwhat-` prefix that
    pruned models carry."""
    model_type = getattr(config, "model_type", None)
    return model_type.removeprefix(MODEL_TYPE_PREFIX) if isinstance(model_type, str) else None


def layout_class_for_config(config, what: str = "this model") -> type[Layout]:
    """Returns the layout class for a model config, chosen by `config.model_type`.

    Args:
        config: A transformers config (a pruned model's counts as its stock family's).
        what: How to name the model in the error message.
    """
    model_type = stock_model_type(config)
    if model_type not in LAYOUT_OF:
        raise ValueError(
            f"hf_keepwhat does not support model type {model_type!r} ({what}). "
            f"Supported model types: {', '.join(supported_model_types())}."
        )
    return LAYOUT_OF[model_type]


def get_layout(
    model: nn.Module, mask_config: MaskConfig | None = None, example_inputs=None
) -> Layout:
    """Returns the layout bound to `model`: by `model.config.model_type` for a transformers
    model, found by graph analysis on `example_inputs` for a plain PyTorch model.

    Args:
        model: A transformers model of a supported type, or any `nn.Module`.
        mask_config: The `MaskConfig` (input lengths for MACs, unit kinds); default
            `MaskConfig()`.
        example_inputs: For a plain `nn.Module` only: inputs of one forward pass (a dict of
            keyword arguments, a tensor or a tuple of tensors).
    """
    config = getattr(model, "config", None)
    if stock_model_type(config) in LAYOUT_OF:
        if example_inputs is not None:
            raise ValueError(
                f"{type(model).__name__} is a supported transformers model ({config.model_type}); "
                "its layout is known, so do not pass example_inputs."
            )
        return layout_class_for_config(config, type(model).__name__)(model, mask_config)
    embedded = embedded_models(model)
    if len(embedded) > 1:
        raise ValueError(
            f"{type(model).__name__} holds several supported models ({', '.join(embedded)}); "
            "hf_keepwhat masks one: wrap the module that holds only the one to prune."
        )
    if embedded:
        prefix = embedded[0]
        inner = model.get_submodule(prefix)
        layout_class = layout_class_for_config(inner.config, type(inner).__name__)
        return ScopedLayout(model, mask_config, layout_class(inner, mask_config), prefix)
    if example_inputs is not None:
        return ModuleLayout(model, mask_config, example_inputs)
    if config is None:
        raise ValueError(
            f"{type(model).__name__} is not a transformers model and holds none. To mask the conv "
            "channels of a plain PyTorch model, pass example_inputs=... (inputs of one forward "
            "pass) to get_mask_model. Supported transformers model types: "
            f"{', '.join(supported_model_types())}."
        )
    return layout_class_for_config(config, type(model).__name__)(model, mask_config)


def embedded_models(model: nn.Module) -> list[str]:
    """Paths of the outermost submodules of `model` that a layout can be bound to: transformers
    models of a supported type, and the encoders of the wav2vec2 family (they keep their config,
    e.g. the `Wav2Vec2ConformerEncoder` inside MusicFM).

    Args:
        model: Any module.
    """
    found = []
    for path, module in model.named_modules():
        if not path or any(path.startswith(f + ".") for f in found):
            continue
        config = getattr(module, "config", None)
        if stock_model_type(config) in LAYOUT_OF and (
            hasattr(module, "base_model_prefix") or hasattr(module, "layers")
        ):
            found.append(path)
    return found


def adapted_feature_extractor(feature_extractor, model_config, mask_config: MaskConfig):
    """The feature extractor that fits a model masked with `mask_config` (Whisper: the shortened
    input window), before the model is built.

    Args:
        feature_extractor: The base model's feature extractor.
        model_config: The base model's config (e.g. `AutoConfig.from_pretrained(name)`).
        mask_config: The `MaskConfig` the model will be masked with.
    """
    layout = layout_class_for_config(model_config, getattr(model_config, "_name_or_path", ""))
    return layout.adapt_feature_extractor(feature_extractor, mask_config)


__all__ = [
    "AUTO_CLASS_OF",
    "FAMILIES",
    "LAYOUTS",
    "Family",
    "Layout",
    "ScopedLayout",
    "adapted_feature_extractor",
    "embedded_models",
    "get_layout",
    "layout_class_for_config",
    "stock_model_type",
    "supported_model_types",
]
