"""GM instrument families across SoundFonts: the out-of-source protocol.

The same notes and labels as `gm_instruments.py` (GM program -> family, 16 classes; the same
fluidsynth renderer), rendered from every GM SoundFont Debian ships, and split **by source**:

| split | SoundFonts | pitches |
|---|---|---|
| `train` | the training sources | the training pitches |
| `validation_in_source` | the training sources | the validation pitches |
| `test_in_source` | the training sources | the test pitches |
| `validation` | one source never trained on: every setting is chosen here | all |
| `test` | one source neither trained on nor used for a choice: reported only | all |

Pitches are every 3 semitones from 36 to 84, each at two velocities; in order, two of every four
pitches train, the third is a validation pitch, the fourth a test pitch. So every table can show
in-source (held-out pitches of the training SoundFonts) and out-of-source (another SoundFont)
side by side. The MuseScore General SoundFonts are deliberately not offered: they stay an outside
check that no choice of the project ever saw.

    python benchmarks/audio_data/gm_sources.py --out data/gm_sources
    python benchmarks/audio_data/gm_sources.py --out data/gm_sources_multi \
        --train fluidr3 opl3_fm --validation timgm6mb --test csound_gm
    python benchmarks/audio_data/gm_sources.py --small_from data/gm_sources \
        --out data/gm_small_s0 --per_family 30 --seed 0   # the small-data regime

Deterministic (the same inputs give byte-identical clips) and resumable: an output whose
`layout.json` already records the same layout and SoundFont digests is kept as it is; anything
else is rendered into a staging folder and moved in whole.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gm_instruments import (  # noqa: E402
    Note,
    file_digest,
    is_silent,
    render_clips,
    replace_folder,
    write_clip,
)

#: Every GM SoundFont Debian ships, by short name: (Debian package, file). MuseScore General is
#: left out on purpose (the outside check).
SOURCES = {
    "fluidr3": ("fluid-soundfont-gm", "/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    "timgm6mb": ("timgm6mb-soundfont", "/usr/share/sounds/sf2/TimGM6mb.sf2"),
    "csound_gm": ("csound-soundfont", "/usr/share/sounds/sf2/sf_GMbank.sf2"),
    "opl3_fm": ("opl3-soundfont", "/usr/share/sounds/sf2/OPL-3_FM_128M.sf2"),
}
PITCHES = tuple(range(36, 85, 3))
VELOCITIES = (80, 112)
DEFAULT_LAYOUT = {"train": ("fluidr3",), "validation": "timgm6mb", "test": "csound_gm"}
LAYOUT_FILE = "layout.json"


def pitch_role(pitch: int) -> str:
    """`train`, `validation` or `test`: what a pitch of `PITCHES` is for within a training source
    (two of every four pitches train, then one validation pitch, then one test pitch)."""
    return ("train", "train", "validation", "test")[PITCHES.index(pitch) % 4]


def soundfont_path(source: str) -> str:
    """The `.sf2` file of a source, or an error naming the Debian package that installs it.

    Args:
        source: A name of `SOURCES`.
    """
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}; choose from {sorted(SOURCES)}.")
    package, path = SOURCES[source]
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} is missing: install Debian's {package} (`make install` does it)."
        )
    return path


def split_of(source: str, pitch: int, train: tuple[str, ...], validation: str, test: str):
    """The split a rendered note belongs to (None: not part of this layout)."""
    if source in train:
        role = pitch_role(pitch)
        return role if role == "train" else f"{role}_in_source"
    return {validation: "validation", test: "test"}.get(source)


def layout_record(train: tuple[str, ...], validation: str, test: str) -> dict:
    """What a layout is made of (compared on resume): the sources by role, their SoundFonts'
    digests, the pitches and velocities."""
    sources = (*train, validation, test)
    if len(set(sources)) != len(sources):
        raise ValueError(
            f"train {list(train)}, validation {validation!r} and test {test!r} must be different "
            "sources: a source used for a choice or trained on is not out of source."
        )
    return {
        "train": list(train),
        "validation": validation,
        "test": test,
        "soundfonts": {s: os.path.basename(soundfont_path(s)) for s in sources},
        "soundfont_sha256": {s: file_digest(soundfont_path(s)) for s in sources},
        "pitches": {
            role: [p for p in PITCHES if pitch_role(p) == role]
            for role in ("train", "validation", "test")
        },
        "velocities": list(VELOCITIES),
    }


def _finished(out_dir: str, name: str, record: dict) -> dict | None:
    """The record `out_dir/name` holds when it matches `record` (the folder is done), else None."""
    done = os.path.join(out_dir, name)
    if not os.path.isfile(done):
        return None
    with open(done, encoding="utf-8") as f:
        previous = json.load(f)
    return previous if {k: previous.get(k) for k in record} == record else None


def build(
    out_dir: str,
    train: tuple[str, ...] = DEFAULT_LAYOUT["train"],
    validation: str = DEFAULT_LAYOUT["validation"],
    test: str = DEFAULT_LAYOUT["test"],
) -> dict:
    """Renders the multi-source layout into `out_dir` (unless it is already there) and returns
    its record (`layout.json`): the layout, clip counts per split and the silent notes skipped.

    Args:
        out_dir: The audiofolder to write: `{split}/{family}/{source}_{program}_p{pitch}_v{velocity}.wav`.
        train: The sources trained on.
        validation: The source every choice is made on.
        test: The source only reported.
    """
    train = tuple(train)
    record = layout_record(train, validation, test)
    previous = _finished(out_dir, LAYOUT_FILE, record)
    if previous is not None:
        return previous
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".gm-sources-") as work:
        staging = os.path.join(work, "out")
        counts: dict[str, int] = {}
        skipped = []
        for source in (*train, validation, test):
            notes = [
                Note(program, pitch, velocity, split_of(source, pitch, train, validation, test))
                for pitch in PITCHES
                for velocity in VELOCITIES
                for program in range(128)
            ]
            clips = render_clips(soundfont_path(source), notes, work)
            for note, clip in zip(notes, clips, strict=True):
                if is_silent(clip):
                    skipped.append(f"{source}_{note.file_name.removesuffix('.wav')}")
                    continue
                write_clip(staging, note.split, note, clip, prefix=f"{source}_")
                counts[note.split] = counts.get(note.split, 0) + 1
        record = {**record, "clips": dict(sorted(counts.items())), "skipped_silent": skipped}
        with open(os.path.join(staging, LAYOUT_FILE), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        replace_folder(staging, out_dir)
    return record


SMALL_FILE = "small.json"


def small_data(full_dir: str, out_dir: str, per_family: int, seed: int) -> dict:
    """The small-data regime: a user's folder of `per_family` clips of each family from the
    training SoundFont (drawn from the full layout's `train` split, seeded), and the
    out-of-source `test` split. No validation split: the recipe carves its own from train, as it
    does from a user's folder. Files are hard links into `full_dir` (copies across file systems).
    Returns the record written to `small.json`; an `out_dir` that holds the same record is kept.

    Args:
        full_dir: A layout written by `build` (the default one: train fluidr3, test csound_gm).
        out_dir: The audiofolder to write: `train/{family}/...` and `test/{family}/...`.
        per_family: Training clips per family (about 30: a few hundred clips in all); 0: every
            clip of the train split (the large regime, with the same carve and test).
        seed: Which clips are drawn.
    """
    with open(os.path.join(full_dir, LAYOUT_FILE), encoding="utf-8") as f:
        layout = json.load(f)
    record = {
        "per_family": per_family,
        "seed": seed,
        "train_sources": layout["train"],
        "test_source": layout["test"],
        "soundfont_sha256": layout["soundfont_sha256"],
    }
    previous = _finished(out_dir, SMALL_FILE, record)
    if previous is not None:
        return previous
    rng = random.Random(seed)
    chosen = {}
    train_root = os.path.join(full_dir, "train")
    chosen["train"] = {}
    for family in sorted(os.listdir(train_root)):
        names = sorted(os.listdir(os.path.join(train_root, family)))
        chosen["train"][family] = sorted(rng.sample(names, per_family)) if per_family else names
    test_root = os.path.join(full_dir, "test")
    chosen["test"] = {
        f: sorted(os.listdir(os.path.join(test_root, f))) for f in os.listdir(test_root)
    }
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".gm-small-") as work:
        staging = os.path.join(work, "out")
        for split, families in chosen.items():
            for family, names in families.items():
                os.makedirs(os.path.join(staging, split, family))
                for name in names:
                    source = os.path.join(full_dir, split, family, name)
                    target = os.path.join(staging, split, family, name)
                    try:
                        os.link(source, target)
                    except OSError:
                        shutil.copyfile(source, target)
        counts = {split: sum(map(len, families.values())) for split, families in chosen.items()}
        record = {**record, "clips": counts}
        with open(os.path.join(staging, SMALL_FILE), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        replace_folder(staging, out_dir)
    return record


def main() -> None:
    """Command line: render the layout (or find it done) and print its clip counts."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="The audiofolder to write (replaced).")
    parser.add_argument("--train", nargs="+", default=list(DEFAULT_LAYOUT["train"]))
    parser.add_argument("--validation", default=DEFAULT_LAYOUT["validation"])
    parser.add_argument("--test", default=DEFAULT_LAYOUT["test"])
    parser.add_argument(
        "--small_from",
        help="A full layout (written by this script): write the small-data regime to --out "
        "instead (--per_family clips a family from its train split, its test split).",
    )
    parser.add_argument("--per_family", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="Which clips --small_from draws.")
    args = parser.parse_args()
    if args.small_from:
        record = small_data(args.small_from, args.out, args.per_family, args.seed)
        print(f"{record['clips']} clips in {args.out}")
        return
    record = build(args.out, tuple(args.train), args.validation, args.test)
    print(
        f"{sum(record['clips'].values())} clips in {args.out}: {record['clips']}; "
        f"{len(record['skipped_silent'])} silent notes skipped"
    )


if __name__ == "__main__":
    main()
