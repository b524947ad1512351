"""FSDD laid out as an audiofolder for the frontier benchmark: the standard test split kept, a
validation split taken from the train indices, every recording copied unchanged."""

import filecmp
import os

import pytest
from conftest import real_asset

from benchmarks.audio_data.fsdd import build, split_of


def test_split_keeps_fsdd_test_indices_and_takes_validation_from_train():
    assert [split_of(i) for i in (0, 4, 5, 9, 10, 49)] == [
        "test",
        "test",
        "validation",
        "validation",
        "train",
        "train",
    ]


def test_lays_out_real_fsdd_with_every_digit_and_speaker_in_every_split(tmp_path):
    recordings = real_asset("KEEPWHAT_FSDD")
    out = tmp_path / "fsdd"
    counts = build(recordings, str(out))
    assert counts == {"test": 250, "validation": 250, "train": 2000}
    for split in counts:
        assert sorted(os.listdir(out / split)) == [str(d) for d in range(10)]
        speakers = {
            n.split("_")[1] for d in os.listdir(out / split) for n in os.listdir(out / split / d)
        }
        assert len(speakers) == 5, (split, speakers)
    assert filecmp.cmp(
        out / "test" / "7" / "7_theo_3.wav", os.path.join(recordings, "7_theo_3.wav"), shallow=False
    )
    # Built again over the old output: replaced as a whole, nothing left over.
    assert build(recordings, str(out), test_below=5, validation_below=20)["validation"] == 750
    assert not any(n.startswith(".fsdd-layout-") for n in os.listdir(tmp_path))


def test_refuses_empty_splits_and_folders_without_fsdd(tmp_path):
    with pytest.raises(ValueError, match="empty split"):
        build(str(tmp_path), str(tmp_path / "out"), test_below=5, validation_below=5)
    with pytest.raises(FileNotFoundError, match="KEEPWHAT_FSDD"):
        build(str(tmp_path), str(tmp_path / "out"))
