"""hf_keepwhat: learn which units of a frozen audio model a task needs, then delete the rest."""

from .callbacks import SparsityCallback
from .config import MaskConfig
from .layouts import supported_model_types
from .masks import MaskParametrization, StraightThroughMask
from .model import MaskModel, get_mask_model
from .modeling_pruned import EmptyAttention, PassThroughLayer
from .pruned import PrunedModelMixin, register_auto_classes
from .pruned_module import load_pruned_module, save_pruned_module
from .units import UnitGroup
from .version import __version__

register_auto_classes()


__all__ = [
    "EmptyAttention",
    "MaskConfig",
    "MaskModel",
    "MaskParametrization",
    "PassThroughLayer",
    "PrunedModelMixin",
    "SparsityCallback",
    "StraightThroughMask",
    "UnitGroup",
    "__version__",
    "get_mask_model",
    "load_pruned_module",
    "save_pruned_module",
    "supported_model_types",
]
