"""Pruned audio models: stock transformers classes rebuilt at the shapes a manifest records.

A pruned model's config carries `keepwhat_manifest`: for every module pruning changed, how to
build it at its new shape (and module attributes such as `num_heads`). The model classes here
subclass the stock ones and apply the manifest in `__init__`, before any weight is loaded, as
timm's `_prune.py` does.

This file must stay self-contained (torch and transformers only): saving a pruned model copies it
next to the weights and names it in `auto_map`, so that
`AutoModelFor...from_pretrained(path, trust_remote_code=True)` loads the model on a machine where
hf_keepwhat is not installed.
"""

from __future__ import annotations

import functools

import torch
import transformers
from torch import nn
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

MANIFEST_KEY = "keepwhat_manifest"
CONVOLUTIONS = {c.__name__: c for c in (nn.Conv1d, nn.Conv2d, nn.Conv3d)}
BATCH_NORMS = {c.__name__: c for c in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)}
MODEL_TYPE_PREFIX = "keepwhat-"


class EmptyAttention(nn.Module):
    """An attention block whose every head was removed: it outputs its output-projection bias.

    Whisper's attention cannot run with zero heads (its K/V reshape cannot infer an empty
    dimension), so the block is replaced instead of shrunk to width 0.

    Args:
        hidden_size: Width of the block's output.
        bias: Whether the block has an output bias (else its output is zero).
    """

    def __init__(self, hidden_size: int, bias: bool = True):
        super().__init__()
        self.hidden_size = hidden_size
        self.bias = nn.Parameter(torch.zeros(hidden_size)) if bias else None

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        # A fresh tensor, not a view of `bias`: views of a parameter taken under no_grad confuse
        # autograd-based tools (FlopCounterMode's module tracker).
        output = hidden_states.new_zeros((*hidden_states.shape[:-1], self.hidden_size))
        if self.bias is not None:
            output = output + self.bias.to(hidden_states.dtype)
        return output, None


class PassThroughLayer(nn.Module):
    """A pre-LN transformer layer whose every head and FFN neuron was removed: `x + bias`.

    Such a layer adds only its attention output bias and its FFN output bias to the residual
    stream (its layer norms feed nothing any more), so it is replaced by one bias, their sum.
    A subclass per stock layer class (`pass_through_class`) keeps the stock class in its bases:
    transformers records `output_hidden_states` with hooks on instances of the layer class,
    and the stock layer's return format is kept. In training mode the stock layer would apply
    dropout to those biases; this one adds them as they are.

    Args:
        hidden_size: Width of the residual stream.
        bias: Whether the removed layer added a bias (else this is the identity).
    """

    def __init__(self, hidden_size: int, bias: bool = True):
        nn.Module.__init__(self)  # not the stock layer's: none of its submodules remain
        self.hidden_size = hidden_size
        self.bias = nn.Parameter(torch.zeros(hidden_size)) if bias else None

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, bias={self.bias is not None}"

    def add_bias(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The layer's output: its input plus the removed layer's constant contribution."""
        if self.bias is None:
            return hidden_states
        return hidden_states + self.bias.to(hidden_states.dtype)


def _return_tensor(self, hidden_states, *args, **kwargs):
    return self.add_bias(hidden_states)


def _return_swin_tuple(self, hidden_states, input_dimensions, output_attentions=False, *args):
    output = self.add_bias(hidden_states)
    return (output, None) if output_attentions else (output,)


def _return_with_position_bias(self, hidden_states, attention_mask=None, position_bias=None, **kw):
    # A WavLM layer hands layer 0's relative position bias on to the next layer.
    return self.add_bias(hidden_states), position_bias


# The pre-LN layer classes that can become pass-throughs, with their stock return format.
PASS_THROUGH_FORWARDS = {
    "WhisperEncoderLayer": _return_tensor,
    "ASTLayer": _return_tensor,
    "Wav2Vec2EncoderLayerStableLayerNorm": _return_tensor,
    "HubertEncoderLayerStableLayerNorm": _return_tensor,
    "UniSpeechEncoderLayerStableLayerNorm": _return_tensor,
    "UniSpeechSatEncoderLayerStableLayerNorm": _return_tensor,
    "WavLMEncoderLayerStableLayerNorm": _return_with_position_bias,
    "ClapAudioLayer": _return_swin_tuple,
}


@functools.cache
def pass_through_class(layer_class: type) -> type:
    """The `PassThroughLayer` subclass that stands in for a layer of `layer_class`.

    Args:
        layer_class: A stock layer class named in `PASS_THROUGH_FORWARDS`.
    """
    forward = PASS_THROUGH_FORWARDS.get(layer_class.__name__)
    if forward is None:
        raise ValueError(
            f"{layer_class.__name__} cannot become a pass-through; supported layer classes: "
            f"{sorted(PASS_THROUGH_FORWARDS)}."
        )
    name = f"KeepWhatPassThrough{layer_class.__name__}"
    return type(name, (PassThroughLayer, layer_class), {"forward": forward, "__module__": __name__})


class KeepWhatWavLMAttention(WavLMAttention):
    """WavLM's attention computed with module calls and an index of the heads it keeps.

    The stock block hands its projection weights to `F.multi_head_attention_forward`, so no
    module hook sees a head's output, and it assumes every head is there: the gate of head `h`
    reads the `h`-th slice of the layer input, and layer 0's relative position bias (shared by
    all layers) has one slice per head. Here `kept_heads` (a buffer, saved with the weights)
    names the original index of each remaining head; with all heads kept this computes what
    the stock block computes.
    """

    def keepwhat_setup(self) -> None:
        """Records the original head count and registers `kept_heads` (all heads)."""
        self.total_heads = self.num_heads
        self.register_buffer("kept_heads", torch.arange(self.num_heads), persistent=True)

    def forward(self, hidden_states, attention_mask=None, position_bias=None, index=0, **kwargs):
        batch, length, _ = hidden_states.shape
        if position_bias is None:  # layer 0: the bias every layer shares, for all heads
            position_bias = self.compute_bias(length, length)
            position_bias = position_bias.unsqueeze(0).repeat(batch, 1, 1, 1)
            position_bias = position_bias.view(batch * self.total_heads, length, length)
        kept = self.kept_heads
        heads = len(kept)
        bias = position_bias.view(batch, self.total_heads, length, length)[:, kept]

        # The gated relative position bias, from each kept head's slice of the input.
        gated = hidden_states.view(batch, length, self.total_heads, -1).permute(0, 2, 1, 3)
        projected = self.gru_rel_pos_linear(gated[:, kept]).view(batch, heads, length, 2, 4)
        gate_a, gate_b = torch.sigmoid(projected.sum(-1)).chunk(2, dim=-1)
        gate = gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0
        scores_bias = gate * bias

        def split(x):
            return x.view(batch, length, heads, self.head_dim).transpose(1, 2)

        query = split(self.q_proj(hidden_states)) * self.head_dim**-0.5
        key, value = split(self.k_proj(hidden_states)), split(self.v_proj(hidden_states))
        scores = torch.matmul(query, key.transpose(-1, -2)) + scores_bias
        if attention_mask is not None:
            padded = attention_mask.ne(1)[:, None, None, :]
            scores = scores.masked_fill(padded, float("-inf"))
        probs = nn.functional.dropout(scores.softmax(dim=-1), self.dropout, self.training)
        context = torch.matmul(probs, value).transpose(1, 2).reshape(batch, length, -1)
        return self.out_proj(context), None, position_bias


def use_keepwhat_wavlm_attention(model: nn.Module) -> None:
    """Turns every `WavLMAttention` of `model` into a `KeepWhatWavLMAttention`, in place.

    Args:
        model: A WavLM model.
    """
    for module in model.modules():
        if type(module) is WavLMAttention:
            module.__class__ = KeepWhatWavLMAttention
            module.keepwhat_setup()


# Families whose modules must be rebuilt before a manifest applies (and before masking).
PREPARE = {"wavlm": use_keepwhat_wavlm_attention}


def describe_module(module: nn.Module) -> dict:
    """The manifest entry that rebuilds `module` at its current shape.

    Args:
        module: An `nn.Linear`, `nn.Conv1d/2d/3d`, `nn.GroupNorm`, `nn.BatchNorm1d/2d/3d`,
            `EmptyAttention` or `PassThroughLayer`.
    """
    if isinstance(module, nn.Linear):
        return {
            "type": "Linear",
            "in_features": module.in_features,
            "out_features": module.out_features,
            "bias": module.bias is not None,
        }
    if type(module) in CONVOLUTIONS.values():
        return {
            "type": type(module).__name__,
            "in_channels": module.in_channels,
            "out_channels": module.out_channels,
            "kernel_size": list(module.kernel_size),
            "stride": list(module.stride),
            "padding": module.padding if isinstance(module.padding, str) else list(module.padding),
            "dilation": list(module.dilation),
            "groups": module.groups,
            "bias": module.bias is not None,
            "padding_mode": module.padding_mode,
        }
    if isinstance(module, nn.GroupNorm):
        return {
            "type": "GroupNorm",
            "num_groups": module.num_groups,
            "num_channels": module.num_channels,
            "eps": module.eps,
            "affine": module.affine,
        }
    if type(module) in BATCH_NORMS.values():
        return {
            "type": type(module).__name__,
            "num_features": module.num_features,
            "eps": module.eps,
            "momentum": module.momentum,
            "affine": module.affine,
            "track_running_stats": module.track_running_stats,
        }
    if isinstance(module, PassThroughLayer):
        return {
            "type": "PassThroughLayer",
            "hidden_size": module.hidden_size,
            "bias": module.bias is not None,
        }
    if isinstance(module, EmptyAttention):
        return {
            "type": "EmptyAttention",
            "hidden_size": module.hidden_size,
            "bias": module.bias is not None,
        }
    raise TypeError(f"Cannot describe a {type(module).__name__} in a pruning manifest.")


def build_module(spec: dict, current: nn.Module) -> nn.Module:
    """Builds an (uninitialised) module from a manifest entry written by `describe_module`.

    Args:
        spec: The manifest entry.
        current: The stock module it replaces (a pass-through subclasses its class).
    """
    kind = spec.get("type")
    if kind == "PassThroughLayer":
        return pass_through_class(type(current))(spec["hidden_size"], spec["bias"])
    if kind == "Linear":
        return nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"])
    if kind in CONVOLUTIONS:
        return CONVOLUTIONS[kind](
            spec["in_channels"],
            spec["out_channels"],
            spec["kernel_size"],
            stride=spec["stride"],
            padding=spec["padding"],
            dilation=spec["dilation"],
            groups=spec["groups"],
            bias=spec["bias"],
            padding_mode=spec.get("padding_mode", "zeros"),
        )
    if kind == "GroupNorm":
        return nn.GroupNorm(spec["num_groups"], spec["num_channels"], spec["eps"], spec["affine"])
    if kind in BATCH_NORMS:
        return BATCH_NORMS[kind](
            spec["num_features"],
            spec["eps"],
            spec["momentum"],
            spec["affine"],
            spec.get("track_running_stats", True),
        )
    if kind == "EmptyAttention":
        return EmptyAttention(spec["hidden_size"], spec["bias"])
    raise ValueError(f"Unknown module type {kind!r} in the pruning manifest.")


def _local_path(model: nn.Module, path: str) -> str | None:
    """`path` relative to `model`: a base model loaded from a task model's checkpoint (e.g.
    `Wav2Vec2Model` from a classifier) lacks the `base_model_prefix.` the manifest paths carry."""
    prefix = getattr(model, "base_model_prefix", "")
    if prefix and path.startswith(prefix + ".") and not hasattr(model, prefix):
        return path[len(prefix) + 1 :]
    try:
        model.get_submodule(path.rpartition(".")[0])
    except AttributeError:
        return None  # a module of the task head, absent from a base model
    return path


def apply_manifest(model: nn.Module, manifest: dict | None) -> None:
    """Rebuilds the modules a manifest lists at their recorded shapes, and sets attributes.

    Args:
        model: A freshly constructed stock model.
        manifest: `{"modules": {path: spec}, "attributes": {path: {name: value}},
            "parameters": {path: shape}}`, or None.
    """
    if not manifest:
        return
    for path, spec in manifest.get("modules", {}).items():
        local = _local_path(model, path)
        if local is None:
            continue
        parent, _, child = local.rpartition(".")
        parent = model.get_submodule(parent)
        setattr(parent, child, build_module(spec, getattr(parent, child)))
    for path, shape in manifest.get("parameters", {}).items():
        local = _local_path(model, path)
        if local is None:
            continue
        module_path, _, name = local.rpartition(".")
        module = model.get_submodule(module_path)
        if name in module._buffers:  # an index buffer (WavLM's kept heads): loaded with weights
            module.register_buffer(name, torch.zeros(shape, dtype=module._buffers[name].dtype))
        else:
            setattr(module, name, nn.Parameter(torch.zeros(shape)))
    for path, attributes in manifest.get("attributes", {}).items():
        local = _local_path(model, path)
        if local is None:
            continue
        module = model.get_submodule(local)
        for name, value in attributes.items():
            setattr(module, name, value)


def _pruned_init(stock: type, model_type: str):
    def __init__(self, config, *args, **kwargs):
        stock.__init__(self, config, *args, **kwargs)
        if model_type in PREPARE:
            PREPARE[model_type](self)
        apply_manifest(self, getattr(config, MANIFEST_KEY, None))

    return __init__


# Stock model type -> (config class, [(model class, Auto class name)]).
FAMILIES = {
    "whisper": (
        "WhisperConfig",
        [("WhisperForAudioClassification", "AutoModelForAudioClassification")],
    ),
    "wav2vec2": (
        "Wav2Vec2Config",
        [
            ("Wav2Vec2Model", "AutoModel"),
            ("Wav2Vec2ForSequenceClassification", "AutoModelForAudioClassification"),
            ("Wav2Vec2ForCTC", "AutoModelForCTC"),
        ],
    ),
    "hubert": (
        "HubertConfig",
        [
            ("HubertModel", "AutoModel"),
            ("HubertForSequenceClassification", "AutoModelForAudioClassification"),
            ("HubertForCTC", "AutoModelForCTC"),
        ],
    ),
    "unispeech": (
        "UniSpeechConfig",
        [
            ("UniSpeechModel", "AutoModel"),
            ("UniSpeechForSequenceClassification", "AutoModelForAudioClassification"),
            ("UniSpeechForCTC", "AutoModelForCTC"),
        ],
    ),
    "unispeech-sat": (
        "UniSpeechSatConfig",
        [
            ("UniSpeechSatModel", "AutoModel"),
            ("UniSpeechSatForSequenceClassification", "AutoModelForAudioClassification"),
            ("UniSpeechSatForCTC", "AutoModelForCTC"),
        ],
    ),
    "sew": (
        "SEWConfig",
        [
            ("SEWModel", "AutoModel"),
            ("SEWForSequenceClassification", "AutoModelForAudioClassification"),
            ("SEWForCTC", "AutoModelForCTC"),
        ],
    ),
    "wav2vec2-conformer": (
        "Wav2Vec2ConformerConfig",
        [
            ("Wav2Vec2ConformerModel", "AutoModel"),
            ("Wav2Vec2ConformerForSequenceClassification", "AutoModelForAudioClassification"),
            ("Wav2Vec2ConformerForCTC", "AutoModelForCTC"),
        ],
    ),
    "audio-spectrogram-transformer": (
        "ASTConfig",
        [
            ("ASTModel", "AutoModel"),
            ("ASTForAudioClassification", "AutoModelForAudioClassification"),
        ],
    ),
    "clap_audio_model": ("ClapAudioConfig", [("ClapAudioModel", "AutoModel")]),
    "wavlm": (
        "WavLMConfig",
        [
            ("WavLMModel", "AutoModel"),
            ("WavLMForSequenceClassification", "AutoModelForAudioClassification"),
            ("WavLMForCTC", "AutoModelForCTC"),
        ],
    ),
    "data2vec-audio": (
        "Data2VecAudioConfig",
        [
            ("Data2VecAudioModel", "AutoModel"),
            ("Data2VecAudioForSequenceClassification", "AutoModelForAudioClassification"),
            ("Data2VecAudioForCTC", "AutoModelForCTC"),
        ],
    ),
}


def _class_name(stock_name: str) -> str:
    return "KeepWhat" + stock_name


# Pruned config and model classes, one per stock class, defined at module level so that
# `auto_map` can name them ("modeling_pruned.KeepWhatWhisperForAudioClassification").
PRUNED_CONFIGS: dict[str, type] = {}
PRUNED_MODELS: dict[str, type] = {}
AUTO_CLASS_OF: dict[str, str] = {}
for _model_type, (_config_name, _models) in FAMILIES.items():
    _config_cls = type(
        _class_name(_config_name),
        (getattr(transformers, _config_name),),
        {"model_type": MODEL_TYPE_PREFIX + _model_type, "__module__": __name__},
    )
    globals()[_config_cls.__name__] = PRUNED_CONFIGS[_model_type] = _config_cls
    for _model_name, _auto in _models:
        _stock = getattr(transformers, _model_name)
        _model_cls = type(
            _class_name(_model_name),
            (_stock,),
            {
                "config_class": _config_cls,
                "__init__": _pruned_init(_stock, _model_type),
                "__module__": __name__,
            },
        )
        globals()[_model_cls.__name__] = PRUNED_MODELS[_model_name] = _model_cls
        AUTO_CLASS_OF[_model_name] = _auto
