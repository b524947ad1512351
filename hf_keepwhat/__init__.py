"""hf_keepwhat: learn which units of a frozen audio model a task needs, then delete the rest."""

from .callbacks import SparsityCallback
from .config import MaskConfig
from .layouts import supported_model_types
from .masks import MaskParametrization, StraightThroughMask
from .model import MaskModel, get_mask_model
from .pruning import EmptyAttention
from .units import UnitGroup

__version__ = "0.1.0"

__all__ = [
    "EmptyAttention",
    "MaskConfig",
    "MaskModel",
    "MaskParametrization",
    "SparsityCallback",
    "StraightThroughMask",
    "UnitGroup",
    "get_mask_model",
    "supported_model_types",
]
