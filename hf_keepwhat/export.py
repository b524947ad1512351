"""ONNX export of a pruned (or dense) model, checked against PyTorch with ONNX Runtime.

torch.onnx's exporter does the conversion. What is added here is what a user deploying a pruned
model needs and would otherwise write by hand: the model's first output (logits, or the hidden
states of a base model) as a graph with a dynamic batch axis (and a dynamic length for raw-audio
inputs), an ONNX Runtime check that the graph computes what the PyTorch model computes on an
input it was not traced with, and optionally ONNX Runtime's dynamic int8 quantization. Pruned
models have layers of different widths, zero-width FFNs, `EmptyAttention` and pass-through
layers; the tests export every family the project prunes. optimum's exporters are not used:
they choose an export recipe by `model_type`, and a pruned model's `keepwhat-*` type has none.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
_INSTALL_HINT = (
    "Install the ONNX extras: pip install 'hf-keepwhat[onnx]' (onnx, onnxscript, onnxruntime)."
)


def _require_onnx():
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as e:
        raise ImportError(f"ONNX export needs {e.name}. {_INSTALL_HINT}") from e
    return onnxruntime


class _FirstOutput(nn.Module):
    """Calls a transformers model with its main input by keyword and returns its first output
    (`logits` of a task model, `last_hidden_state` of a base model) as a plain tensor."""

    def __init__(self, model: nn.Module, input_name: str):
        super().__init__()
        self.model = model
        self.input_name = input_name

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**{self.input_name: inputs}, return_dict=True)[0]


def _dynamic_axes(inputs: torch.Tensor) -> dict[int, torch.export.Dim]:
    # Raw audio (batch, samples) may have any length; spectrogram inputs (Whisper, AST) have the
    # fixed frame count their position embeddings were cut to, so only their batch varies.
    axes = {0: torch.export.Dim("batch")}
    if inputs.dim() == 2:
        axes[1] = torch.export.Dim("samples", min=400, max=16000 * 600)
    return axes


def _other_input(inputs: torch.Tensor, graph_shape: list, generator: torch.Generator):
    """A random input that differs from the traced one along every axis the graph left dynamic
    (`graph_shape`: ONNX Runtime's input shape, a name where an axis is dynamic)."""
    shape = list(inputs.shape)
    for axis, size in enumerate(graph_shape):
        if isinstance(size, str):
            shape[axis] += 1 if axis == 0 else shape[axis] // 2
    return torch.randn(shape, generator=generator, dtype=inputs.dtype)


def run_onnx(path: str, input_name: str, inputs: torch.Tensor, threads: int | None = None):
    """Runs an exported graph with ONNX Runtime on the CPU and returns its output (numpy).

    Args:
        path: The `.onnx` file.
        input_name: The graph's input name (the model's `main_input_name`).
        inputs: The input tensor.
        threads: Intra-op threads (default: ONNX Runtime's).
    """
    return onnx_session(path, threads).run(None, {input_name: inputs.numpy()})[0]


def onnx_session(path: str, threads: int | None = None, spinning: bool = True):
    """An ONNX Runtime CPU inference session for `path`.

    Args:
        path: The `.onnx` file.
        threads: Intra-op threads (default: ONNX Runtime's).
        spinning: Whether idle intra-op threads spin-wait (ONNX Runtime's default). Off when
            several sessions take turns: an idle session's spinning threads slow the next one
            down (Whisper tiny.en on 2 cores: 4.8 ms alone, 18.7 ms in turn with 3 others).
    """
    onnxruntime = _require_onnx()
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _trace(model: nn.Module, path: str, input_name: str, inputs: torch.Tensor, opset_version):
    """Writes the ONNX graph of `model`'s first output; returns that output's name."""
    output_name = next(iter(model(**{input_name: inputs}, return_dict=True).keys()))
    with warnings.catch_warnings():
        # torch.export warns about transformers internals it traces through; the check that
        # follows the export is what tells whether the graph is right.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                _FirstOutput(model, input_name),
                (inputs,),
                path,
                input_names=[input_name],
                output_names=[output_name],
                dynamic_shapes=(_dynamic_axes(inputs),),
                opset_version=opset_version,
                dynamo=True,
                verbose=False,  # the check below says whether it worked; no progress lines
            )
        except Exception as e:  # torch.onnx raises several types; say which model failed
            raise RuntimeError(
                f"torch.onnx could not export {type(model).__name__}: {str(e)[-800:]}\n"
                "If the stock (unpruned) model does not export either, the limitation is in "
                "torch.onnx or transformers."
            ) from e
    return output_name


@torch.no_grad()
def _trace_and_rerun(model, path: str, input_name: str, inputs, opset_version):
    """Traces `model` to `path`, then runs it (eval mode) on a fresh input of the shape the
    graph accepts; returns the output name, the graph's input shape, that input and the
    model's output on it."""
    was_training = model.training
    model.eval()
    try:
        output_name = _trace(model, path, input_name, inputs, opset_version)
        # What the graph really accepts: torch.export may keep an axis static (Wav2Vec2-
        # Conformer with rotary positions specialises the length), so the record and the check
        # follow what ONNX Runtime reads from the graph, not what was asked for.
        graph_shape = onnx_session(path).get_inputs()[0].shape
        check = _other_input(inputs, graph_shape, torch.Generator().manual_seed(0))
        expected = model(**{input_name: check}, return_dict=True)[0].numpy()
    finally:
        model.train(was_training)
    return output_name, graph_shape, check, expected


def _quantized_int8(path: str, output_dir: str, input_name: str, check, expected) -> dict:
    """ONNX Runtime's dynamic int8 quantization of the graph, and its difference from PyTorch."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path = os.path.join(output_dir, INT8_FILE)
    quantize_dynamic(path, int8_path, weight_type=QuantType.QInt8)
    quantized = run_onnx(int8_path, input_name, check)
    return {
        "int8_file": INT8_FILE,
        "int8_max_abs_difference": float(abs(quantized - expected).max()),
    }


def export_onnx(
    model: nn.Module,
    output_dir: str,
    example_inputs: dict[str, torch.Tensor],
    *,
    opset_version: int | None = None,
    atol: float = 1e-4,
    int8: bool = False,
) -> dict:
    """Exports `model` to `output_dir/model.onnx` and checks it with ONNX Runtime.

    The graph takes the model's main input (dynamic batch; dynamic length for raw audio) and
    returns its first output. The check runs the graph and the PyTorch model on a fresh random
    input of another batch size (and length, for raw audio, unless the exporter kept the
    length static) than the traced one and raises if they differ by more than `atol`. The
    model's config is saved beside the graph.

    Args:
        model: A transformers model (pruned or dense), on the CPU.
        output_dir: Folder to write `model.onnx` (and `config.json`) into.
        example_inputs: `{main_input_name: tensor}`, one input to trace with.
        opset_version: ONNX opset (default: torch.onnx's).
        atol: Largest allowed absolute difference from the PyTorch outputs.
        int8: Also write `model_int8.onnx`, ONNX Runtime's dynamic int8 quantization of the
            graph (weights int8, activations quantized per call); its difference from the
            PyTorch outputs is reported, not checked.

    Returns:
        What was written and checked: file names, input and output names, the graph's input
        shape (a name where an axis is dynamic), the largest absolute difference from PyTorch
        (and the int8 graph's).
    """
    _require_onnx()
    if len(example_inputs) != 1:
        raise ValueError(
            f"Export takes the model's main input only, got {sorted(example_inputs)}; pass "
            "{model.main_input_name: tensor} (inputs of equal length need no attention mask)."
        )
    ((input_name, inputs),) = example_inputs.items()
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, ONNX_FILE)
    output_name, graph_shape, check, expected = _trace_and_rerun(
        model, path, input_name, inputs, opset_version
    )
    exported = run_onnx(path, input_name, check)
    difference = float(abs(exported - expected).max())
    if not difference <= atol:
        raise RuntimeError(
            f"The exported graph {path} differs from the PyTorch model by {difference:.3g} "
            f"(> atol {atol:g}) on an input of shape {list(check.shape)}. Report it with the "
            "model's config; exporting with another opset_version may help."
        )
    result = {
        "onnx_file": ONNX_FILE,
        "input_name": input_name,
        "output_name": output_name,
        "input_shape": graph_shape,
        "checked_input_shape": list(check.shape),
        "max_abs_difference": difference,
    }
    if int8:
        result |= _quantized_int8(path, output_dir, input_name, check, expected)
    if hasattr(model, "config"):
        model.config.save_pretrained(output_dir)
    return result
