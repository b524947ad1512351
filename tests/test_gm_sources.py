"""The out-of-source GM layout: every Debian GM SoundFont through the same renderer, split by
source (train / validation / test SoundFonts) with in-source pitch splits beside them."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks", "audio_data"))
import gm_sources  # noqa: E402
from gm_instruments import FAMILIES  # noqa: E402
from test_gm_instruments import _digests as _files  # noqa: E402

# Real weights, real data or subprocess runs: `make test-all` (CI), not `make test`.
pytestmark = pytest.mark.slow


@pytest.fixture
def few_notes(monkeypatch):
    """Four pitches (two train, one validation, one test) at one velocity: a fast render."""
    monkeypatch.setattr(gm_sources, "PITCHES", (48, 51, 54, 57))
    monkeypatch.setattr(gm_sources, "VELOCITIES", (100,))
    for source in gm_sources.SOURCES:
        if not os.path.isfile(gm_sources.SOURCES[source][1]):
            pytest.fail(f"{source}'s SoundFont is missing: `make install` installs it.")


def test_splits_by_source_with_in_source_pitches_beside_them(tmp_path, few_notes):
    record = gm_sources.build(str(tmp_path / "a"), ("fluidr3", "opl3_fm"), "timgm6mb", "csound_gm")
    files = _files(tmp_path / "a")
    by_split: dict[str, set[tuple[str, str]]] = {}
    for path in files:
        if path == gm_sources.LAYOUT_FILE:
            continue
        split, family, name = path.split(os.sep)
        assert family in FAMILIES
        source, _, pitch, _ = name.rsplit("_", 3)  # {source}_{program}_p{pitch}_v{velocity}.wav
        by_split.setdefault(split, set()).add((source, pitch.removeprefix("p")))
    assert {s for s, _ in by_split["train"]} == {"fluidr3", "opl3_fm"}
    assert {p for _, p in by_split["train"]} == {"048", "051"}
    assert {p for _, p in by_split["validation_in_source"]} == {"054"}
    assert {p for _, p in by_split["test_in_source"]} == {"057"}
    assert {s for s, _ in by_split["validation"]} == {"timgm6mb"}
    assert {s for s, _ in by_split["test"]} == {"csound_gm"}
    assert {p for _, p in by_split["test"]} == {"048", "051", "054", "057"}  # every pitch
    assert sum(record["clips"].values()) + len(record["skipped_silent"]) == 4 * 4 * 128
    # Deterministic: a second folder from the same inputs holds byte-identical clips.
    gm_sources.build(str(tmp_path / "b"), ("fluidr3", "opl3_fm"), "timgm6mb", "csound_gm")
    assert _files(tmp_path / "b") == files


def test_a_finished_layout_is_kept_and_another_replaces_it(tmp_path, few_notes):
    out = str(tmp_path / "gm")
    gm_sources.build(out)
    marker = os.path.join(out, "train", "piano", "kept.txt")
    open(marker, "w").close()
    gm_sources.build(out)  # the same layout: nothing rendered again
    assert os.path.exists(marker)
    record = gm_sources.build(out, ("timgm6mb",), "fluidr3", "opl3_fm")
    assert not os.path.exists(marker) and record["train"] == ["timgm6mb"]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".gm-sources-")]


def test_a_source_cannot_hold_two_roles():
    with pytest.raises(ValueError, match="must be different sources"):
        gm_sources.layout_record(("fluidr3",), "fluidr3", "csound_gm")
    with pytest.raises(ValueError, match="Unknown source"):
        gm_sources.soundfont_path("musescore")


def test_the_small_data_regime_draws_per_family_clips_of_train_and_keeps_test(tmp_path, few_notes):
    full = str(tmp_path / "full")
    gm_sources.build(full)
    record = gm_sources.small_data(full, str(tmp_path / "small"), per_family=3, seed=0)
    train = {f: sorted(os.listdir(tmp_path / "small" / "train" / f)) for f in FAMILIES}
    assert all(len(names) == 3 for names in train.values()) and record["clips"]["train"] == 48
    assert sorted(os.listdir(tmp_path / "small")) == [
        "small.json",
        "test",
        "train",
    ]  # no validation
    assert record["clips"]["test"] == sum(
        len(os.listdir(os.path.join(full, "test", f)))
        for f in os.listdir(os.path.join(full, "test"))
    )
    other = gm_sources.small_data(full, str(tmp_path / "other"), per_family=3, seed=1)
    assert other["seed"] == 1
    assert train != {f: sorted(os.listdir(tmp_path / "other" / "train" / f)) for f in FAMILIES}
