"""Free Spoken Digit Dataset from `KEEPWHAT_FSDD`: real 8 kHz recordings, resampled to 16 kHz."""

import os

import numpy as np
import soundfile as sf
import torch
import torchaudio

from benchmarks.audio_data.fsdd import FILE_NAME


def fsdd_split(root: str, split: str) -> list[tuple[str, int]]:
    """(path, digit) pairs of FSDD's standard split: index 0-4 is test, 5-49 train.

    Args:
        root: Folder of `{digit}_{speaker}_{index}.wav` files.
        split: `"train"` or `"test"`.
    """
    items = []
    for name in sorted(os.listdir(root)):
        match = FILE_NAME.fullmatch(name)
        if match and (int(match["index"]) < 5) == (split == "test"):
            items.append((os.path.join(root, name), int(match["digit"])))
    if not items:
        raise FileNotFoundError(f"No FSDD recordings named like 0_george_0.wav in {root}.")
    return items


def load_16k(path: str) -> np.ndarray:
    """Reads a mono wav file and resamples it to 16 kHz with torchaudio."""
    audio, rate = sf.read(path, dtype="float32")
    return torchaudio.functional.resample(torch.from_numpy(audio), rate, 16_000).numpy()
