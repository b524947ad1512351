"""What every layout shares: the `Family` declaration, the bound `Layout` interface, and
builders for the common unit groups.

A layout is the only architecture-specific code. Its class declares the transformers families it
handles (`families`: stock classes, Auto classes, pre-LN layer return formats, preparation);
everything else (pruned classes, Auto registration, the saved modeling file, CLI naming) is
derived from that. An instance is bound to one model: it knows where the backbone and its layers
are, what a reference input looks like, and which `UnitGroup`s the model has.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import MaskConfig
from ..runtime import PREPARATIONS, PassThroughLayer, undo_keepwhat_wavlm_attention
from ..units import UnitGroup


@dataclass(frozen=True)
class Family:
    """One transformers model family and what its pruned models need.

    Args:
        model_type: `config.model_type`, e.g. `"whisper"`.
        config_class: The transformers config class, e.g. `"WhisperConfig"`.
        models: Stock model class -> the Auto class that loads it, e.g.
            `{"WhisperForAudioClassification": "AutoModelForAudioClassification"}`.
        pass_through: Pre-LN layer classes that become `PassThroughLayer`s once empty, with
            their return format (a key of `runtime.RETURN_FORMATS`).
        prepare: A key of `runtime.PREPARATIONS` that rebuilds modules before masking and
            before a manifest applies (WavLM's attention), or None.
        feature_extractor: A feature extractor class of `runtime` that saved models of this
            family may carry (Whisper's for fractional windows): registered with
            `AutoFeatureExtractor` and named in the saved `preprocessor_config.json`'s `auto_map`.
    """

    model_type: str
    config_class: str
    models: dict[str, str]
    pass_through: dict[str, str] = field(default_factory=dict)
    prepare: str | None = None
    feature_extractor: str | None = None


def task_family(model_type: str, prefix: str, config: str | None = None, **kwargs) -> Family:
    """The usual speech-encoder family: `<prefix>Model`, `...ForSequenceClassification` and
    `...ForCTC`, loaded by `AutoModel`, `AutoModelForAudioClassification`, `AutoModelForCTC`.

    Args:
        model_type: `config.model_type`.
        prefix: The class-name prefix, e.g. `"Hubert"`.
        config: The config class name (default `<prefix>Config`).
        **kwargs: `pass_through` and `prepare` of the `Family`.
    """
    models = {
        f"{prefix}Model": "AutoModel",
        f"{prefix}ForSequenceClassification": "AutoModelForAudioClassification",
        f"{prefix}ForCTC": "AutoModelForCTC",
    }
    return Family(model_type, config or f"{prefix}Config", models, **kwargs)


class Layout:
    """Architecture knowledge for one family of models, bound to one model.

    Subclasses declare `families` and implement `reference_inputs`,
    `describe_reference_input` and `unit_groups` (and `layers_path` where there are layers);
    everything else reads only what these return.

    Args:
        model: The model (a transformers model of one of `families`).
        mask_config: The `MaskConfig` it is masked with (input lengths, unit kinds).
    """

    families: tuple[Family, ...] = ()
    #: Whether the family's input window is fixed and `MaskConfig.max_input_seconds` shortens it
    #: (Whisper's 30 s): recipes then fit the window to the data when the user sets none.
    shortens_input_window: bool = False

    def __init__(self, model: nn.Module, mask_config: MaskConfig | None = None):
        self.model = model
        self.mask_config = mask_config if mask_config is not None else MaskConfig()

    @classmethod
    def pass_through_returns(cls) -> dict[str, str]:
        """Return format of every pre-LN layer class of this layout's families."""
        return {k: v for family in cls.families for k, v in family.pass_through.items()}

    def prepare(self):
        """Rebuilds, in place, modules that masking and pruning cannot work on as they are
        (the family's `prepare`; the pruned classes do the same); returns what undoes it."""
        turned = []
        for family in self.families:
            if family.prepare:  # idempotent: only stock modules are rebuilt
                turned += PREPARATIONS[family.prepare](self.model) or []
        return lambda: undo_keepwhat_wavlm_attention(turned)

    def check_supported(self) -> None:
        """Refuses, before anything changes, a model whose class no pruned class exists for
        (what `prune()` could not finish), naming the classes that are supported."""
        supported = {name for family in self.families for name in family.models}
        if not supported.intersection(c.__name__ for c in type(self.model).__mro__):
            raise ValueError(
                f"hf_keepwhat cannot prune a {type(self.model).__name__}: it supports "
                f"{sorted(supported)} of this family (for Whisper, WhisperForAudioClassification: "
                "the encoder alone; WhisperForConditionalGeneration's decoder is not pruned). Or "
                "wrap the encoder in a module of your own, which hf_keepwhat masks at its path."
            )

    @functools.cached_property
    def backbone_path(self) -> str:
        """Path of the backbone (the part whose cost the budget counts) inside the model: by
        default the child named by `base_model_prefix`, or the model itself when it is the
        bare model."""
        prefix = getattr(self.model, "base_model_prefix", "")
        return prefix if prefix and hasattr(self.model, prefix) else ""

    @property
    def backbone(self) -> nn.Module:
        """The backbone module."""
        return self.model.get_submodule(self.backbone_path)

    def path(self, suffix: str) -> str:
        """`suffix` inside the backbone, as a path in the model."""
        return f"{self.backbone_path}.{suffix}".lstrip(".")

    @property
    def layers_path(self) -> str:
        """Path of the `nn.ModuleList` of transformer layers inside the model."""
        raise NotImplementedError

    def reference_inputs(self) -> dict[str, torch.Tensor]:
        """Backbone inputs (batch 1, on the CPU) of the length MACs are counted for."""
        raise NotImplementedError

    def describe_reference_input(self) -> str:
        """Says in words what input MACs are counted for, e.g. "3 s input window"."""
        raise NotImplementedError

    def stock_config_updates(self) -> dict:
        """Stock config fields that would describe the model's current (pruned) shapes.

        Used to save a pruned model with a stock config when one can describe it; whether it
        really does is checked by comparing every tensor shape, so proposing is enough.
        """
        return {}

    def unit_groups(self) -> list[UnitGroup]:
        """Every prunable unit group of the model, with the frames each of its modules runs on."""
        raise NotImplementedError

    def pass_through_layers(self) -> list[str]:
        """Paths of the layers that become a `PassThroughLayer` once all their units are gone.

        Only pre-LN layers qualify (the classes a family lists in `pass_through`): a post-LN
        layer normalises the residual stream itself, so emptied it is no pass-through.
        """
        kinds = self.pass_through_returns()
        return [
            f"{self.layers_path}.{i}"
            for i, layer in enumerate(self.model.get_submodule(self.layers_path))
            if type(layer).__name__ in kinds
            # wav2vec2's attention adapter (`adapter_attn_dim`) adds a function of the stream.
            and getattr(layer, "adapter_layer", None) is None
        ]

    def set_input_window(self, seconds: float):
        """Shortens a fixed input window to `seconds` (only models that have one, like Whisper)."""
        raise ValueError(
            f"{type(self.model).__name__} has no fixed input window; leave "
            "MaskConfig.max_input_seconds unset (it applies to Whisper only)."
        )

    @classmethod
    def adapt_feature_extractor(cls, feature_extractor, mask_config: MaskConfig):
        """The feature extractor that fits the masked model (only Whisper's window changes it).

        Args:
            feature_extractor: The base model's feature extractor.
            mask_config: The `MaskConfig`.
        """
        return feature_extractor

    def drop_layers_above(self, last_layer: int):
        """Deletes the transformer layers above `last_layer` in place and updates the config;
        returns what undoes it.

        Args:
            last_layer: Index of the last layer to keep.
        """
        layers = self.model.get_submodule(self.layers_path)
        num_layers = len(layers)
        if last_layer >= num_layers:
            raise ValueError(
                f"last_layer={last_layer} but the model has {num_layers} layers "
                f"(indices 0..{num_layers - 1})."
            )
        dropped = list(layers[last_layer + 1 :])
        config, weights = self.model.config, getattr(self.model, "layer_weights", None)
        del layers[last_layer + 1 :]
        config.num_hidden_layers = last_layer + 1
        # Classifiers with `use_weighted_layer_sum` hold one weight per hidden state (layers + 1).
        if isinstance(weights, nn.Parameter) and weights.numel() == num_layers + 1:
            self.model.layer_weights = nn.Parameter(weights.data[: last_layer + 2].clone())

        def undo():
            layers.extend(dropped)
            config.num_hidden_layers = num_layers
            if isinstance(weights, nn.Parameter):
                self.model.layer_weights = weights

        return undo


def layers_with_units(layers: nn.ModuleList) -> list[nn.Module]:
    """The layers that still hold heads and neurons (not `PassThroughLayer`s).

    Args:
        layers: A model's transformer layers.
    """
    return [layer for layer in layers if not isinstance(layer, PassThroughLayer)]


def head_group(
    model: nn.Module,
    name: str,
    attention: str,
    seq_len: int,
    out: str = "out_proj",
    num_heads_attr: str = "num_heads",
) -> UnitGroup:
    """The heads of one self-attention block with `q_proj`, `k_proj`, `v_proj` and an output
    projection.

    Args:
        model: The transformers model.
        name: The group's name.
        attention: Path of the attention module (it must have `head_dim` and `num_heads_attr`).
        seq_len: Number of frames the block attends over for the reference input.
        out: Name of the output projection inside the attention module.
        num_heads_attr: The attention module's attribute that counts heads.
    """
    module = model.get_submodule(attention)
    projections = ("q_proj", "k_proj", "v_proj", out)
    return UnitGroup(
        name=name,
        kind="heads",
        num_units=getattr(module, num_heads_attr),
        unit_width=module.head_dim,
        mask_module=f"{attention}.{out}",
        mask_dim=-1,
        producers=[f"{attention}.{p}" for p in projections[:3]],
        consumers=[f"{attention}.{out}"],
        attributes={attention: {num_heads_attr: 1}},
        empty_module=attention,
        frames={f"{attention}.{p}": seq_len for p in projections},
        # Scores (Q K^T) and the weighted sum (A V): seq_len * seq_len * head_dim MACs each.
        extra_macs_per_unit=2 * seq_len * seq_len * module.head_dim,
    )


def neuron_group(
    model: nn.Module, name: str, producer: str, consumer: str, seq_len: int
) -> UnitGroup:
    """The hidden neurons of one feed-forward block `consumer(act(producer(x)))`.

    Args:
        model: The transformers model.
        name: The group's name.
        producer: Path of the first projection (`nn.Linear`).
        consumer: Path of the second projection (`nn.Linear`).
        seq_len: Number of frames the block runs on for the reference input.
    """
    return UnitGroup(
        name=name,
        kind="ffn",
        num_units=model.get_submodule(producer).out_features,
        unit_width=1,
        mask_module=consumer,
        mask_dim=-1,
        producers=[producer],
        consumers=[consumer],
        frames={producer: seq_len, consumer: seq_len},
    )


def channel_group(
    model: nn.Module,
    name: str,
    producer: str,
    consumer: str,
    frames: dict[str, int],
    norms: list[str] | None = None,
) -> UnitGroup:
    """The output channels of one `nn.Conv1d` consumed by the next `nn.Conv1d`.

    Args:
        model: The transformers model.
        name: The group's name.
        producer: Path of the convolution whose output channels are the units.
        consumer: Path of the convolution that reads them.
        frames: Output frames of `producer` and of `consumer` for the reference input.
        norms: Per-channel norms between them (GroupNorm with a group per channel, BatchNorm).
    """
    conv = model.get_submodule(producer)
    if model.get_submodule(consumer).groups != 1:
        raise ValueError(f"{consumer} is a grouped convolution; its channels are not separable.")
    return UnitGroup(
        name=name,
        kind="conv",
        num_units=conv.out_channels,
        unit_width=1,
        mask_module=consumer,
        mask_dim=1,
        producers=[producer],
        consumers=[consumer],
        norms=list(norms or []),
        frames=dict(frames),
        min_kept=1,
    )


def is_per_channel_norm(norm: nn.Module | None) -> bool:
    """True when `norm` normalises each channel on its own, so deleting a channel is exact."""
    if norm is None:
        return True
    if isinstance(norm, nn.GroupNorm):
        return norm.num_groups == norm.num_channels
    return isinstance(norm, nn.modules.batchnorm._BatchNorm)
