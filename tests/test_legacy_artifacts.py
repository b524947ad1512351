"""Artifacts saved by hf_keepwhat 0.1.0 still load and compute what they computed then.

`fixtures/legacy_0.1.0/` was written by hf_keepwhat 0.1.0 (main at f972a6d, before the redesign)
from tiny models built in code with random biases: non-uniform pruned Whisper (an emptied
attention block and a pass-through layer), Wav2Vec2 (conv channels) and stable-layer-norm WavLM
(kept-head buffers, a pass-through layer), and a Whisper mask adapter with its base weights.
`expected.safetensors` holds each model's input and the masked model's logits at save time.
"""

import os

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import tiny_whisper
from transformers import AutoModelForAudioClassification

from hf_keepwhat import MaskModel, PassThroughLayer

LEGACY = os.path.join(os.path.dirname(__file__), "fixtures", "legacy_0.1.0")
EXPECTED = load_file(os.path.join(LEGACY, "expected.safetensors"))
INPUTS = {"whisper": "input_features", "wav2vec2": "input_values", "wavlm": "input_values"}


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_legacy_pruned_model_loads_with_hf_keepwhat(name):
    model = AutoModelForAudioClassification.from_pretrained(os.path.join(LEGACY, name)).eval()
    with torch.no_grad():
        logits = model(**{INPUTS[name]: EXPECTED[f"{name}.input"]}).logits
    torch.testing.assert_close(logits, EXPECTED[f"{name}.logits"], atol=1e-5, rtol=1e-5)
    if name in ("whisper", "wavlm"):  # both were saved with their last layer passed through
        assert any(isinstance(m, PassThroughLayer) for m in model.modules())


def test_legacy_adapter_restores_the_masks():
    base = tiny_whisper()
    base.load_state_dict(load_file(os.path.join(LEGACY, "whisper_base.safetensors")))
    mm = MaskModel.from_pretrained(base, os.path.join(LEGACY, "whisper_adapter")).eval()
    with torch.no_grad():
        logits = mm(input_features=EXPECTED["whisper.input"]).logits
    torch.testing.assert_close(logits, EXPECTED["whisper.logits"], atol=1e-5, rtol=1e-5)
    pruned = mm.prune()
    with torch.no_grad():
        torch.testing.assert_close(
            pruned(input_features=EXPECTED["whisper.input"]).logits,
            EXPECTED["whisper.logits"],
            atol=1e-5,
            rtol=1e-5,
        )
