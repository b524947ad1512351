"""The GM-instrument renderer: FluidR3 GM through fluidsynth, as the frontier benchmark uses it."""

import hashlib
import os

import pytest
import soundfile as sf

from benchmarks.audio_data.gm_instruments import (
    DEFAULT_SOUNDFONT,
    FAMILIES,
    SAMPLE_RATE,
    SILENCE_PEAK,
    build,
    plan_notes,
)

PITCHES = {"train": (52,), "validation": (55,), "test": (58,)}


def _digests(folder) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            out[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def test_renders_an_audiofolder_deterministically(tmp_path):
    if not os.path.isfile(DEFAULT_SOUNDFONT):
        pytest.fail(f"{DEFAULT_SOUNDFONT} is missing: `make install` installs fluid-soundfont-gm.")
    summary = build(str(tmp_path / "a"), pitches=PITCHES)
    rendered = sum(summary["clips"].values())
    assert rendered + len(summary["skipped_silent"]) == 3 * 128
    assert rendered > 3 * 120  # a few GM programs are silent at some pitches, not most
    assert sorted(os.listdir(tmp_path / "a" / "train")) == sorted(FAMILIES)
    clip, rate = sf.read(tmp_path / "a" / "test" / "piano" / "000_p058_v100.wav", dtype="int16")
    assert rate == SAMPLE_RATE and clip.shape == (SAMPLE_RATE,) and abs(clip).max() >= SILENCE_PEAK
    assert abs(clip[-SAMPLE_RATE // 10 :]).max() < abs(clip).max()  # the note was released
    build(str(tmp_path / "b"), pitches=PITCHES)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")  # byte-identical clips


def test_splits_must_not_share_pitches():
    with pytest.raises(ValueError, match="both 'train' and 'test'"):
        plan_notes({"train": (60,), "test": (60,)}, (100,))
    with pytest.raises(ValueError, match="outside MIDI"):
        plan_notes({"train": (128,)}, (100,))
