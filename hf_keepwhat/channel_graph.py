"""Finds the prunable channel chains of a plain PyTorch model from its exported graph.

A chain is a producer (`nn.Conv1d/2d/3d` with `groups=1`, or `nn.Linear`) whose output channels
reach exactly one consumer (a convolution or `nn.Linear` that reads them as input channels)
through operations that act on each channel separately: per-channel norms, activations, dropout,
padding and pooling over other dimensions, reductions over other dimensions, depthwise
convolutions, and arithmetic with tensors that do not vary across channels. Deleting a channel
from the producer (and its norms and depthwise convolutions) and from the consumer's input then
computes exactly what zeroing it at the consumer's input computes.

Anything else ends the search for that producer with a reason: a residual add with a tensor from
outside the chain, a concatenation, a norm that mixes channels, a flatten that merges channels
with other dimensions, several consumers, or the channels being a model output.

The graph comes from `torch.export` (the ATen graph of one forward pass on example inputs):
unlike `torch.fx.symbolic_trace`, it follows Python control flow such as `if embed:` and records
which module every operation belongs to (`nn_module_stack`). No library offers this analysis.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
from torch import nn

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

# ATen ops (overload packet names) applied element by element: they keep the channel dimension.
ELEMENTWISE = {
    "relu", "relu_", "relu6", "gelu", "gelu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "silu",
    "silu_", "mish", "mish_", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu",
    "hardtanh", "hardtanh_", "hardswish", "hardswish_", "hardsigmoid", "hardsigmoid_", "softplus",
    "dropout", "dropout_", "feature_dropout", "feature_dropout_", "alpha_dropout", "clone",
    "contiguous", "detach", "alias", "abs", "neg", "exp", "log", "log1p", "sqrt", "rsqrt",
    "square", "clamp", "clamp_", "clamp_min", "clamp_max", "_to_copy", "to", "type_as",
}  # fmt: skip
# Arithmetic between two tensors: exact when the other operand does not vary across channels,
# or is another tensor of the same chain with its channels in the same place.
BINARY = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "pow", "maximum", "minimum"}
# Pooling over the trailing 1, 2 or 3 dimensions (the channel dimension must come before them).
POOLING = {
    "max_pool1d": 1, "max_pool2d": 2, "max_pool3d": 3, "max_pool1d_with_indices": 1,
    "max_pool2d_with_indices": 2, "max_pool3d_with_indices": 3, "avg_pool1d": 1, "avg_pool2d": 2,
    "avg_pool3d": 3, "adaptive_avg_pool1d": 1, "adaptive_avg_pool2d": 2, "adaptive_avg_pool3d": 3,
    "adaptive_max_pool1d": 1, "adaptive_max_pool2d": 2, "adaptive_max_pool3d": 3, "lp_pool1d": 1,
    "lp_pool2d": 2,
}  # fmt: skip
REDUCTIONS = {"mean", "sum", "amax", "amin", "max", "min", "logsumexp", "var", "std"}
BATCH_NORMS = {
    "batch_norm",
    "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit",
    "native_batch_norm",
}
CONVOLUTIONS = {"conv1d", "conv2d", "conv3d", "convolution", "_convolution"}


class NotExact(Exception):
    """Raised while following a chain when pruning its channels would not be exact."""


@dataclass
class ChannelChain:
    """The units of one producer: its output channels, down to the one layer that reads them.

    Args:
        producer: Path of the producing module.
        consumer: Path of the module whose input columns/channels are the units.
        norms: Per-channel norms between them.
        depthwise: Depthwise convolutions between them.
        frames: Output elements per channel (over the whole example input) of each module, for MACs.
    """

    producer: str
    consumer: str
    norms: list[str] = field(default_factory=list)
    depthwise: list[str] = field(default_factory=list)
    frames: dict[str, int] = field(default_factory=dict)


def _packet(node) -> str:
    if node.target is operator.getitem:
        return "getitem"
    return getattr(getattr(node.target, "overloadpacket", None), "__name__", str(node.target))


def _module_path(node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    return list(stack.values())[-1][0]


def _shape(node) -> tuple[int, ...] | None:
    value = node.meta.get("val")
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _dims(value, ndim: int) -> list[int]:
    dims = value if isinstance(value, (list, tuple)) else [value]
    return sorted(d % ndim for d in dims)


def export_graph(model: nn.Module, example_inputs: dict) -> torch.fx.Graph:
    """The ATen graph of `model` (in eval mode) on `example_inputs`, from `torch.export`.

    Args:
        model: Any `nn.Module`.
        example_inputs: Keyword arguments of `model.forward`.
    """
    was_training = model.training
    model.eval()
    try:
        program = torch.export.export(model, (), kwargs=dict(example_inputs), strict=False)
    except Exception as e:  # torch.export raises many types; the user needs to know which model
        raise ValueError(
            f"torch.export could not trace {type(model).__name__} on the example inputs "
            f"({type(e).__name__}: {e}). Pass example_inputs that its forward accepts, or mask a "
            "submodule that export can trace."
        ) from e
    finally:
        model.train(was_training)
    return program.graph


class _ChainFinder:
    """Follows one producer's output through the graph, tracking where its channels are."""

    def __init__(self, model: nn.Module, calls: dict[str, int]):
        self.model = model
        self.calls = calls

    def module(self, node, kinds) -> tuple[str, nn.Module]:
        path = _module_path(node)
        module = self.model.get_submodule(path) if path is not None else None
        if not isinstance(module, kinds):
            names = "/".join(k.__name__ for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
            raise NotExact(f"{_packet(node)} is not called by an nn.{names} module")
        if self.calls.get(path, 0) != 1:
            raise NotExact(f"{path} runs {self.calls.get(path, 0)} times in one forward pass")
        return path, module

    def follow(self, start, start_dim: int, chain: ChannelChain) -> None:
        """Walks every use of `start`'s channels; fills `chain.consumer`, norms and depthwise."""
        channel_dim = {start: start_dim}
        consumers = []
        for node in _nodes_after(start):
            inputs = [a for a in node.all_input_nodes if a in channel_dim]
            if not inputs or (not node.users and node.op != "output"):
                continue  # unrelated, or dead (e.g. the unused indices of a max)
            if node.op == "output":
                raise NotExact("its channels are a model output")
            dim = self.step(node, inputs, channel_dim, chain)
            if dim is None:  # a consumer: the chain ends here
                consumers.append(_module_path(node))
            else:
                channel_dim[node] = dim
        if len(consumers) != 1:
            raise NotExact(
                f"its channels are read by {len(consumers)} layers {consumers}; exactly one "
                "consumer is supported"
            )
        chain.consumer = consumers[0]

    def step(self, node, inputs, channel_dim, chain) -> int | None:
        """The channel dimension of `node`'s output, or None when `node` consumes the channels."""
        op = _packet(node)
        source = node.args[0] if node.args else None
        if not isinstance(source, torch.fx.Node):  # e.g. the list a concatenation takes
            source = None
        dim = channel_dim.get(source)
        shape = _shape(source) if source is not None else None
        if op == "getitem":
            if node.args[1] != 0:
                raise NotExact(f"output {node.args[1]} of {source.name} is used")
            return dim
        if op in BINARY:
            return self.binary(node, channel_dim)
        if op in ("cat", "concat", "stack"):
            raise NotExact("a concatenation")
        if dim is None or any(a is not source for a in inputs):
            raise NotExact(f"{op} reads the channels as a parameter or second operand")
        ndim = len(shape)
        if op in ELEMENTWISE:
            return dim
        if op in BATCH_NORMS or op in ("group_norm", "layer_norm"):
            return self.norm(node, op, dim, ndim, chain)
        if op in ("pad", "constant_pad_nd", "reflection_pad1d", "reflection_pad2d"):
            padded = len(node.args[1]) // 2  # pads the last `padded` dimensions
            if dim >= ndim - padded:
                raise NotExact("padding along the channel dimension")
            return dim
        if op in POOLING:
            if dim >= ndim - POOLING[op]:
                raise NotExact(f"{op} pools over the channel dimension")
            return dim
        if op in REDUCTIONS:
            return self.reduction(node, dim, ndim)
        if op in ("unsqueeze", "squeeze", "permute", "transpose", "t", "view", "reshape"):
            return self.reshape(node, op, dim, shape)
        if op == "flatten":
            return self.reshape(node, "reshape", dim, shape)
        if op in CONVOLUTIONS:
            return self.convolution(node, dim, chain)
        if op == "linear":
            if dim != ndim - 1:
                raise NotExact("nn.Linear reads the last dimension, not the channels")
            path, _ = self.module(node, nn.Linear)
            chain.frames[path] = math.prod(_shape(node)[:-1])
            return None
        raise NotExact(f"{op} is not known to act on each channel separately")

    def norm(self, node, op, dim: int, ndim: int, chain) -> int:
        """A normalisation keeps the channel dimension when it normalises each channel alone."""
        if op == "layer_norm":
            if dim >= ndim - len(node.args[1]):
                raise NotExact("a layer norm normalises across the channels")
            return dim
        if op == "group_norm":
            path, norm = self.module(node, nn.GroupNorm)
            if norm.num_groups != norm.num_channels or dim != 1:
                raise NotExact(f"{path} normalises groups of channels together")
        else:
            if dim != 1:
                raise NotExact(f"batch norm over dimension 1 while the channels are at {dim}")
            path, _ = self.module(node, nn.modules.batchnorm._BatchNorm)
        chain.norms.append(path)
        return dim

    def binary(self, node, channel_dim) -> int:
        out_ndim = len(_shape(node))
        dims = set()
        for operand in node.args[:2]:
            if not isinstance(operand, torch.fx.Node):
                continue  # a Python number
            shape = _shape(operand) or ()
            offset = out_ndim - len(shape)  # broadcasting aligns trailing dimensions
            if operand in channel_dim:
                dims.add(channel_dim[operand] + offset)
            else:
                dims.add(("outside", offset, shape))
        tracked = {d for d in dims if isinstance(d, int)}
        if len(tracked) != 1:
            raise NotExact(f"{_packet(node)} combines tensors with channels in different places")
        dim = tracked.pop()
        for d in dims - {dim}:
            _, offset, shape = d
            if dim - offset >= 0 and shape[dim - offset] != 1:
                raise NotExact(
                    f"{_packet(node)} with a tensor from outside the chain that varies across "
                    "channels (a residual connection)"
                )
        return dim

    @staticmethod
    def reduction(node, dim: int, ndim: int) -> int:
        reduced = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if reduced is None or reduced == []:
            raise NotExact(f"{_packet(node)} over every dimension, channels included")
        reduced = _dims(reduced, ndim)
        if dim in reduced:
            raise NotExact(f"{_packet(node)} over the channel dimension")
        keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        return dim if keepdim else dim - sum(d < dim for d in reduced)

    @staticmethod
    def reshape(node, op: str, dim: int, shape) -> int:
        out = _shape(node)
        if op in ("permute", "transpose", "t"):
            if op == "permute":
                order = [d % len(shape) for d in node.args[1]]
            else:
                a, b = (0, 1) if op == "t" else [d % len(shape) for d in node.args[1:3]]
                order = list(range(len(shape)))
                order[a], order[b] = order[b], order[a]
            return order.index(dim)
        # unsqueeze, squeeze, view, reshape, flatten: the channels stay a dimension of their own
        # when the elements before them are still grouped the same way.
        before = math.prod(shape[:dim])
        for j, size in enumerate(out):
            if size == shape[dim] and math.prod(out[:j]) == before:
                return j
        raise NotExact(f"{op} to {list(out)} merges the channels with other dimensions (a flatten)")

    def convolution(self, node, dim: int, chain: ChannelChain) -> int | None:
        if dim != 1:
            raise NotExact(f"a convolution reads dimension 1 while the channels are at {dim}")
        path, conv = self.module(node, CONV_TYPES)
        frames = math.prod(_shape(node)) // conv.out_channels
        if conv.groups == 1:
            chain.frames[path] = frames
            return None
        if conv.groups == conv.in_channels == conv.out_channels:
            chain.depthwise.append(path)
            chain.frames[path] = frames
            return 1
        raise NotExact(f"{path} is a grouped convolution (groups={conv.groups})")


def _nodes_after(start):
    node = start.next
    while node.op != "root":
        yield node
        node = node.next


def find_chains(model: nn.Module, example_inputs: dict) -> tuple[list[ChannelChain], dict]:
    """Every exactly prunable channel chain of `model`, and why the other producers are not.

    Args:
        model: Any `nn.Module`.
        example_inputs: Keyword arguments of `model.forward` for one forward pass.

    Returns:
        `(chains, refused)`: the chains in graph order, and `{producer path: reason}`.
    """
    graph = export_graph(model, example_inputs)
    calls: dict[str, int] = {}
    producers = []
    for node in graph.nodes:
        op = _packet(node) if node.op == "call_function" else None
        if op in CONVOLUTIONS or op == "linear":
            path = _module_path(node)
            calls[path] = calls.get(path, 0) + 1
            producers.append(node)
        elif op in BATCH_NORMS or op == "group_norm":
            path = _module_path(node)
            calls[path] = calls.get(path, 0) + 1
    finder = _ChainFinder(model, calls)
    chains, refused = [], {}
    for node in producers:
        path = _module_path(node)
        module = model.get_submodule(path) if path else None
        if isinstance(module, CONV_TYPES):
            if module.groups != 1:
                continue  # depthwise/grouped: its channels belong to the chain that feeds it
            channel_dim = 1
        elif isinstance(module, nn.Linear):
            channel_dim = len(_shape(node)) - 1
        else:
            continue
        chain = ChannelChain(producer=path, consumer="")
        try:
            if calls[path] != 1:
                raise NotExact(f"it runs {calls[path]} times in one forward pass")
            out_channels = _shape(node)[channel_dim]
            chain.frames[path] = math.prod(_shape(node)) // out_channels
            finder.follow(node, channel_dim, chain)
        except NotExact as reason:
            refused[path] = str(reason)
            continue
        chains.append(chain)
    return chains, refused
