"""hf_keepwhat: learn which units of a frozen audio model a task needs, then delete the rest.

The public API is what this module exports; task recipes also use `hf_keepwhat.tasks`.
"""

from .averaging import WeightAverageCallback
from .baselines import set_structured_masks
from .callbacks import SparsityCallback
from .config import MaskConfig
from .exact_budget import meet_target
from .finetuning import DistillationTrainer, finetune
from .layouts import adapted_feature_extractor, get_layout, supported_model_types
from .masks import (
    GatedStraightThroughMask,
    HardConcreteMask,
    MaskParametrization,
    StraightThroughMask,
)
from .model import MaskModel, get_mask_model
from .profiling import count_macs, count_params, disk_size, environment, measure_latency
from .recovery import default_lora_config, recover_with_lora, refit_head
from .runtime import EmptyAttention, PassThroughLayer
from .standalone import (
    PrunedModelMixin,
    load_pruned_module,
    register_auto_classes,
    save_pruned_module,
)
from .target_training import train_to_target
from .units import KeptUnits, UnitGroup
from .version import __version__

register_auto_classes()


__all__ = [
    "DistillationTrainer",
    "EmptyAttention",
    "KeptUnits",
    "MaskConfig",
    "MaskModel",
    "MaskParametrization",
    "PassThroughLayer",
    "PrunedModelMixin",
    "SparsityCallback",
    "StraightThroughMask",
    "GatedStraightThroughMask",
    "HardConcreteMask",
    "UnitGroup",
    "WeightAverageCallback",
    "__version__",
    "adapted_feature_extractor",
    "count_macs",
    "count_params",
    "default_lora_config",
    "disk_size",
    "environment",
    "finetune",
    "get_layout",
    "get_mask_model",
    "load_pruned_module",
    "measure_latency",
    "meet_target",
    "recover_with_lora",
    "refit_head",
    "save_pruned_module",
    "set_structured_masks",
    "supported_model_types",
    "train_to_target",
]
