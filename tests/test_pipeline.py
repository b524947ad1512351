"""A saved pruned model runs in transformers' `pipeline("audio-classification")`, with
hf_keepwhat imported and, without it, through `trust_remote_code=True`."""

import subprocess
import sys

import numpy as np
import pytest
from tiny_models import tiny_whisper
from transformers import WhisperFeatureExtractor, pipeline

from hf_keepwhat import MaskConfig, get_mask_model

SCRIPT = """
import importlib.abc, json, sys
import numpy as np
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hf_keepwhat":
            raise ImportError("blocked")
sys.meta_path.insert(0, Block())
from transformers import pipeline
classify = pipeline("audio-classification", model=sys.argv[1], trust_remote_code=True)
audio = np.sin(np.arange(8000) / 10).astype(np.float32)
print(json.dumps(classify({"raw": audio, "sampling_rate": 16000}, top_k=3)))
"""


def _saved(tmp_path):
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    mm.set_kept("encoder.layers.0.heads", [0, 3])  # non-uniform: custom code needed
    extractor = WhisperFeatureExtractor(feature_size=16, chunk_length=1)
    mm.prune(feature_extractor=extractor).save_pretrained(tmp_path)
    return tmp_path


def test_pipeline_with_hf_keepwhat(tmp_path):
    classify = pipeline("audio-classification", model=str(_saved(tmp_path)))
    audio = np.sin(np.arange(8000) / 10).astype(np.float32)
    out = classify({"raw": audio, "sampling_rate": 16000}, top_k=3)
    assert len(out) == 3 and abs(sum(o["score"] for o in out) - 1) < 1e-4


@pytest.mark.slow
def test_pipeline_with_remote_code_only(tmp_path):
    folder = _saved(tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(folder)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(__import__("json").loads(result.stdout.strip().splitlines()[-1])) == 3
