"""What a pruned model needs at run time: the modules that stand in for removed parts, the shape
manifest that rebuilds pruned modules before weights load, and the factory of pruned classes.

A pruned model's config carries `keepwhat_manifest`: for every module pruning changed, how to build
it at its new shape, plus tensor shapes and module attributes (`num_heads`, ...). A pruned class
subclasses the stock class and applies the manifest in `__init__`, before any weight is loaded, as
timm's `_prune.py` does.

This file must stay self-contained (torch and transformers only): saving a pruned model writes it
next to the weights, followed by a few generated lines that define that model's classes
(`define_pruned_classes`) and that `auto_map` names, so that
`AutoModelFor...from_pretrained(path, trust_remote_code=True)` works where hf_keepwhat is not
installed. Which families exist is declared by hf_keepwhat's layouts, not here.
"""

from __future__ import annotations

import functools

import torch
import transformers
from torch import nn
from transformers import WhisperFeatureExtractor
from transformers.models.wavlm.modeling_wavlm import WavLMAttention

MANIFEST_KEY = "keepwhat_manifest"
MODEL_TYPE_PREFIX = "keepwhat-"
CLASS_PREFIX = "KeepWhat"


# ---- modules that stand in for removed parts ---------------------------------------------------


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
    and the stock layer's return format (`RETURN_FORMATS`) is kept. In training mode the stock
    layer would apply dropout to those biases; this one adds them as they are.

    Args:
        hidden_size: Width of the residual stream.
        bias: Whether the removed layer added a bias (else this is the identity).
    """

    returns = "tensor"

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


# What a stock pre-LN layer returns, by the name a layout declares for its layer classes.
RETURN_FORMATS = {
    "tensor": _return_tensor,
    "swin_tuple": _return_swin_tuple,
    "with_position_bias": _return_with_position_bias,
}


@functools.cache
def pass_through_class(layer_class: type, returns: str) -> type:
    """The `PassThroughLayer` subclass that stands in for a layer of `layer_class`.

    Args:
        layer_class: The stock layer class.
        returns: Its return format, a key of `RETURN_FORMATS`.
    """
    if returns not in RETURN_FORMATS:
        raise ValueError(f"Unknown pass-through return format {returns!r}: {list(RETURN_FORMATS)}.")
    namespace = {"forward": RETURN_FORMATS[returns], "returns": returns, "__module__": __name__}
    name = f"{CLASS_PREFIX}PassThrough{layer_class.__name__}"
    return type(name, (PassThroughLayer, layer_class), namespace)


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
        # An explicit width, not -1: exporters (ONNX) cannot infer it when no head is left.
        context = (
            torch.matmul(probs, value).transpose(1, 2).reshape(batch, length, heads * self.head_dim)
        )
        return self.out_proj(context), None, position_bias


def use_keepwhat_wavlm_attention(model: nn.Module) -> list[nn.Module]:
    """Turns every `WavLMAttention` of `model` into a `KeepWhatWavLMAttention`, in place;
    returns the modules it turned (`undo_keepwhat_wavlm_attention` turns them back).

    Args:
        model: A WavLM model.
    """
    turned = [m for m in model.modules() if type(m) is WavLMAttention]
    for module in turned:
        module.__class__ = KeepWhatWavLMAttention
        module.keepwhat_setup()
    return turned


def undo_keepwhat_wavlm_attention(modules: list[nn.Module]) -> None:
    """Turns modules `use_keepwhat_wavlm_attention` turned back into stock `WavLMAttention`s.

    Args:
        modules: What `use_keepwhat_wavlm_attention` returned.
    """
    for module in modules:
        module.__class__ = WavLMAttention
        del module._buffers["kept_heads"], module.total_heads


# Rebuilds a family's modules before masking and before a manifest applies, by the name a
# layout declares.
PREPARATIONS = {"wavlm_attention": use_keepwhat_wavlm_attention}


# ---- the module kinds pruning changes: how to describe, rebuild and resize each ---------------


def _resize_linear(module: nn.Linear, dim: int, size: int) -> None:
    setattr(module, "out_features" if dim == 0 else "in_features", size)


def _resize_conv(module: nn.Module, dim: int, size: int) -> None:
    if dim == 1:
        module.in_channels = size * module.groups
    elif module.groups > 1 and module.groups == module.in_channels == module.out_channels:
        module.in_channels = module.out_channels = module.groups = size  # depthwise
    else:
        module.out_channels = size


def _resize_group_norm(module: nn.GroupNorm, dim: int, size: int) -> None:
    module.num_groups = module.num_channels = size  # only per-channel group norms are pruned


def _resize_batch_norm(module: nn.Module, dim: int, size: int) -> None:
    module.num_features = size


_CONV_FIELDS = (
    "in_channels",
    "out_channels",
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "groups",
    "padding_mode",
)
_BATCH_NORM_FIELDS = ("num_features", "eps", "momentum", "affine", "track_running_stats")
# type name -> (class, constructor arguments read from the module's attributes, resize)
MODULE_KINDS = {
    "Linear": (nn.Linear, ("in_features", "out_features"), _resize_linear),
    "Conv1d": (nn.Conv1d, _CONV_FIELDS, _resize_conv),
    "Conv2d": (nn.Conv2d, _CONV_FIELDS, _resize_conv),
    "Conv3d": (nn.Conv3d, _CONV_FIELDS, _resize_conv),
    "GroupNorm": (
        nn.GroupNorm,
        ("num_groups", "num_channels", "eps", "affine"),
        _resize_group_norm,
    ),
    "BatchNorm1d": (nn.BatchNorm1d, _BATCH_NORM_FIELDS, _resize_batch_norm),
    "BatchNorm2d": (nn.BatchNorm2d, _BATCH_NORM_FIELDS, _resize_batch_norm),
    "BatchNorm3d": (nn.BatchNorm3d, _BATCH_NORM_FIELDS, _resize_batch_norm),
    "EmptyAttention": (EmptyAttention, ("hidden_size",), None),
    "PassThroughLayer": (PassThroughLayer, ("hidden_size", "returns"), None),
}
_WITH_BIAS = ("Linear", "Conv1d", "Conv2d", "Conv3d", "EmptyAttention", "PassThroughLayer")


def module_kind(module: nn.Module) -> str:
    """The `MODULE_KINDS` name of `module` (subclasses count as their kind)."""
    for name, (cls, _, _) in MODULE_KINDS.items():
        if isinstance(module, cls):
            return name
    raise TypeError(
        f"Pruning cannot change a {type(module).__name__}; it handles {sorted(MODULE_KINDS)}."
    )


def resize_module(module: nn.Module, dim: int, size: int) -> None:
    """Updates the attributes that record `module`'s shape after its tensors were sliced on
    dimension `dim` (0: outputs, 1: inputs) to `size` channels.

    Args:
        module: A module of one of the `MODULE_KINDS`.
        dim: The sliced dimension of its weight.
        size: Channels left on that dimension.
    """
    MODULE_KINDS[module_kind(module)][2](module, dim, size)


def describe_module(module: nn.Module) -> dict:
    """The manifest entry that rebuilds `module` at its current shape (`build_module`).

    Args:
        module: A module of one of the `MODULE_KINDS`.
    """
    kind = module_kind(module)
    _, fields, _ = MODULE_KINDS[kind]
    spec = {"type": kind}
    for field in fields:
        value = getattr(module, field)
        spec[field] = list(value) if isinstance(value, tuple) else value
    if kind in _WITH_BIAS:
        spec["bias"] = module.bias is not None
    return spec


def build_module(spec: dict, current: nn.Module, pass_through_returns: dict | None = None):
    """Builds an (uninitialised) module from a manifest entry written by `describe_module`.

    Args:
        spec: The manifest entry.
        current: The stock module it replaces (a pass-through subclasses its class).
        pass_through_returns: Return format by stock layer class name, for manifests written
            before entries recorded it (hf_keepwhat 0.1.0).
    """
    kind = spec.get("type")
    if kind not in MODULE_KINDS:
        raise ValueError(f"Unknown module type {kind!r} in the pruning manifest.")
    if kind == "PassThroughLayer":
        returns = spec.get("returns") or (pass_through_returns or {})[type(current).__name__]
        return pass_through_class(type(current), returns)(spec["hidden_size"], spec["bias"])
    cls, fields, _ = MODULE_KINDS[kind]
    kwargs = {f: spec[f] for f in fields if f in spec}
    if kind in _WITH_BIAS:
        kwargs["bias"] = spec["bias"]
    return cls(**kwargs)


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


def _entries(model: nn.Module, section: dict):
    for path, value in section.items():
        local = _local_path(model, path)
        if local is not None:
            yield local, value


def apply_manifest(model: nn.Module, manifest: dict | None, pass_through_returns=None) -> None:
    """Rebuilds the modules a manifest lists at their recorded shapes, and sets attributes.

    Args:
        model: A freshly constructed stock model.
        manifest: `{"modules": {path: spec}, "attributes": {path: {name: value}},
            "parameters": {path: shape}, "prepare": [name], "layers": {path: count}}`, or None.
        pass_through_returns: See `build_module`.
    """
    if not manifest:
        return
    for name in manifest.get("prepare", []):
        PREPARATIONS[name](model)
    # Top layers dropped (`last_layer`): a config carries the count for transformers models, a
    # plain module (a classifier around a backbone) only through its manifest.
    for path, count in _entries(model, manifest.get("layers", {})):
        del model.get_submodule(path)[count:]
    for path, spec in _entries(model, manifest.get("modules", {})):
        parent, _, child = path.rpartition(".")
        parent = model.get_submodule(parent)
        setattr(parent, child, build_module(spec, getattr(parent, child), pass_through_returns))
    for path, shape in _entries(model, manifest.get("parameters", {})):
        module_path, _, name = path.rpartition(".")
        module = model.get_submodule(module_path)
        if name in module._buffers:  # an index buffer (WavLM's kept heads): loaded with weights
            module.register_buffer(name, torch.zeros(shape, dtype=module._buffers[name].dtype))
        else:
            setattr(module, name, nn.Parameter(torch.zeros(shape)))
    for path, attributes in _entries(model, manifest.get("attributes", {})):
        module = model.get_submodule(path)
        for name, value in attributes.items():
            setattr(module, name, value)


# ---- a Whisper feature extractor for windows shorter than a second ---------------------------


class KeepWhatWhisperFeatureExtractor(WhisperFeatureExtractor):
    """`WhisperFeatureExtractor` whose window (`chunk_length`, in seconds) may be fractional,
    e.g. 0.5 s for keyword spotting; a whole-second window is saved with the stock class.

    Written by hand because the stock class derives its sample counts as
    `chunk_length * sampling_rate`, a float for 0.5 s, which its padding (numpy) refuses, and it
    recomputes them on load, so no saved value can fix them.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_samples = round(self.chunk_length * self.sampling_rate)
        self.nb_max_frames = self.n_samples // self.hop_length


# ---- pruned classes ----------------------------------------------------------------------------


def pruned_class_name(stock_name: str) -> str:
    """`KeepWhat<stock>`, the name of the pruned class of a stock class."""
    return CLASS_PREFIX + stock_name


def define_pruned_classes(
    model_type: str,
    config_name: str,
    model_names: list[str],
    prepare: str | None = None,
    pass_through_returns: dict | None = None,
    module: str = __name__,
) -> tuple[type, dict[str, type]]:
    """The pruned config class of a family and a pruned class per stock model class.

    A pruned class is a subclass of the stock class whose `__init__` rebuilds what the config's
    manifest lists before weights load; its config class has the model type
    `keepwhat-<model_type>`.

    Args:
        model_type: The stock `config.model_type`, e.g. `"whisper"`.
        config_name: The stock config class, e.g. `"WhisperConfig"`.
        model_names: Stock model classes, e.g. `["WhisperForAudioClassification"]`.
        prepare: A key of `PREPARATIONS` to apply before the manifest (WavLM's attention).
        pass_through_returns: Return format by stock layer class name (`build_module`).
        module: The `__module__` the classes report (where `auto_map` finds them).
    """
    config_class = type(
        pruned_class_name(config_name),
        (getattr(transformers, config_name),),
        {"model_type": MODEL_TYPE_PREFIX + model_type, "__module__": module},
    )
    models = {}
    for stock_name in model_names:
        stock = getattr(transformers, stock_name)

        def __init__(self, config, *args, _stock=stock, **kwargs):
            _stock.__init__(self, config, *args, **kwargs)
            if prepare is not None:
                PREPARATIONS[prepare](self)
            apply_manifest(self, getattr(config, MANIFEST_KEY, None), pass_through_returns)

        namespace = {"config_class": config_class, "__init__": __init__, "__module__": module}
        models[stock_name] = type(pruned_class_name(stock_name), (stock,), namespace)
    return config_class, models
