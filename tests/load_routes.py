"""Loads saved models by one route in a fresh process; run by test_artifacts.py.

    python load_routes.py ROUTE JOBS.json

ROUTE is `keepwhat` (import hf_keepwhat, then the Auto class), `remote` (hf_keepwhat cannot be
imported at all; `trust_remote_code=True`) or `stock` (plain transformers, no custom code).
JOBS.json lists {"path", "auto", "inputs", "output"} and optionally "method" (called instead of
the model, e.g. `get_audio_features`) and "audio" (a saved waveform: the inputs are then what the
folder's feature extractor, loaded by `AutoFeatureExtractor` on the same route, makes of it):
each model's first output is saved to "output" with the classes that loaded it.
"""

import importlib.abc
import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"


class _BlockKeepWhat(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_keepwhat" or name.startswith("hf_keepwhat."):
            raise ImportError(f"{name} is blocked: this process must load without hf_keepwhat")
        return None


def main() -> None:
    route, jobs_file = sys.argv[1:3]
    kwargs = {}
    if route == "remote":
        sys.meta_path.insert(0, _BlockKeepWhat())
        kwargs["trust_remote_code"] = True
    elif route == "keepwhat":
        import hf_keepwhat  # noqa: F401  (registers the pruned classes)

    import torch
    import transformers

    with open(jobs_file) as f:
        jobs = json.load(f)
    for job in jobs:
        model = getattr(transformers, job["auto"]).from_pretrained(job["path"], **kwargs).eval()
        call = getattr(model, job["method"]) if "method" in job else model
        inputs, extractor = torch.load(job["inputs"]), None
        if "audio" in job:
            extractor = transformers.AutoFeatureExtractor.from_pretrained(job["path"], **kwargs)
            audio = torch.load(job["audio"]).numpy()
            inputs = dict(extractor(audio, sampling_rate=16000, return_tensors="pt"))
        with torch.no_grad():
            output = call(**inputs)
        output = output if isinstance(output, torch.Tensor) else output[0]
        loaded_by = f"{type(model).__module__}.{type(model).__name__}"
        extracted_by = None if extractor is None else type(extractor).__module__
        torch.save({"output": output, "class": loaded_by, "extractor": extracted_by}, job["output"])
    assert route != "remote" or "hf_keepwhat" not in sys.modules


if __name__ == "__main__":
    main()
