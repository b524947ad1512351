"""Deployment paths of pruned models: ONNX export (checked with ONNX Runtime), dynamic int8
quantization and torch.compile, on every family the project prunes (tiny configs)."""

import json

import pytest
import torch
from test_pruning_equivalence import _random_masks
from tiny_models import FAMILIES, tiny_whisper
from transformers import WhisperFeatureExtractor

from hf_keepwhat import MaskConfig, get_mask_model
from hf_keepwhat.cli import main
from hf_keepwhat.export import INT8_FILE, ONNX_FILE, export_onnx, run_onnx
from hf_keepwhat.quantization import quantize_dynamic_int8


def _pruned(family: str, seed: int = 0):
    """A pruned tiny model of `family` with random masks (an emptied layer, a zero-width FFN,
    an emptied last layer), its main input name and an input of batch 2."""
    build, input_name, shape = FAMILIES[family]
    torch.manual_seed(seed)
    mm = get_mask_model(build(), MaskConfig(budget="params", target_sparsity=0.0))
    _random_masks(mm, torch.Generator().manual_seed(seed))
    return mm.prune().eval(), input_name, torch.randn(*shape)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_onnx_export_computes_what_pytorch_does(family, tmp_path):
    model, input_name, inputs = _pruned(family)
    result = export_onnx(model, str(tmp_path), {input_name: inputs})
    assert result["max_abs_difference"] <= 1e-4  # checked on another batch size (and length)
    assert result["checked_input_shape"][0] == inputs.shape[0] + 1
    # The batch is dynamic, and so is the length of raw audio except where the exporter
    # specialised it (recorded in the graph, so ONNX Runtime refuses other lengths by name).
    static_length = family == "conformer-rotary"
    assert result["input_shape"][0] == "batch"
    assert isinstance(result["input_shape"][-1], str) == (inputs.dim() == 2 and not static_length)
    shape = list(inputs.shape)
    shape[0] = 1
    if isinstance(result["input_shape"][-1], str):
        shape[1] *= 3
    other = torch.randn(shape)
    with torch.no_grad():
        expected = model(**{input_name: other}).logits.numpy()
    assert abs(run_onnx(str(tmp_path / ONNX_FILE), input_name, other) - expected).max() <= 1e-4


def test_onnx_int8_graph_and_refusals(tmp_path):
    model, input_name, inputs = _pruned("whisper")
    result = export_onnx(model, str(tmp_path), {input_name: inputs}, int8=True)
    assert (tmp_path / INT8_FILE).is_file() and result["int8_max_abs_difference"] < 1.0
    assert json.loads((tmp_path / "config.json").read_text())["model_type"].startswith("keepwhat")
    with pytest.raises(ValueError, match="main input only"):
        export_onnx(model, str(tmp_path), {input_name: inputs, "attention_mask": inputs})


def test_cli_export(tmp_path, capsys):
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    mm.set_kept("encoder.layers.1.heads", [0, 3])
    mm.set_kept("encoder.layers.2.ffn", [])
    mm.prune().save_pretrained(tmp_path / "pruned")
    WhisperFeatureExtractor(feature_size=16, chunk_length=1).save_pretrained(tmp_path / "pruned")
    main(["export", str(tmp_path / "pruned"), str(tmp_path / "onnx"), "--onnx"])
    assert "largest difference" in capsys.readouterr().out
    written = {p.name for p in (tmp_path / "onnx").iterdir()}
    assert {ONNX_FILE, "config.json", "preprocessor_config.json", "keepwhat_export.json"} <= written
    record = json.loads((tmp_path / "onnx" / "keepwhat_export.json").read_text())
    assert record["input_name"] == "input_features" and record["output_name"] == "logits"
    with pytest.raises(SystemExit):  # a format is required
        main(["export", str(tmp_path / "pruned"), str(tmp_path / "onnx2")])


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_int8_quantization_of_pruned_models(family):
    model, input_name, inputs = _pruned(family)
    zero_width = [
        m for m in model.modules() if isinstance(m, torch.nn.Linear) and not m.weight.numel()
    ]
    quantized = quantize_dynamic_int8(model)
    with torch.no_grad():
        expected = model(**{input_name: inputs}).logits
        got = quantized(**{input_name: inputs}).logits
    assert torch.isfinite(got).all()
    assert torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0) > 0.999
    linears = [m for m in quantized.modules() if type(m) is torch.nn.Linear]
    assert len(linears) == len(zero_width)  # only the zero-width ones stay in float
    assert any(isinstance(m, torch.nn.Linear) for m in model.modules())  # the original is kept


@pytest.mark.slow
@pytest.mark.parametrize("family", ["whisper", "wavlm"])
def test_torch_compile_of_pruned_models(family):
    model, input_name, inputs = _pruned(family)
    compiled = torch.compile(model)
    with torch.no_grad():
        for batch in (inputs, torch.cat([inputs, inputs[:1]])):
            expected = model(**{input_name: batch}).logits
            assert torch.allclose(compiled(**{input_name: batch}).logits, expected, atol=1e-5)
