"""The Free Spoken Digit Dataset (FSDD) laid out as an `audiofolder` (`OUT/{split}/{digit}/*.wav`)
with the validation split the frontier benchmark needs, so that FSDD can be run next to GM
instruments as the saturated reference task.

FSDD's standard split keeps recording index 0-4 for test; this adds a validation split from the
train indices (by default 5-9), so test is FSDD's standard 250 test clips. Every speaker is in
every split, as in the standard split. The recordings are copied unchanged (8 kHz; the frontier
resamples on reading).

    python benchmarks/audio_data/fsdd.py --fsdd $KEEPWHAT_FSDD --out data/fsdd
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile

FILE_NAME = re.compile(r"(?P<digit>\d)_(?P<speaker>[a-z]+)_(?P<index>\d+)\.wav")


def split_of(index: int, test_below: int = 5, validation_below: int = 10) -> str:
    """The split of a recording by its index (the number after the speaker in its name).

    Args:
        index: The recording's index, 0-49 in FSDD.
        test_below: Indices below this are test (FSDD's standard split: 5).
        validation_below: Indices from `test_below` up to below this are validation.
    """
    if index < test_below:
        return "test"
    return "validation" if index < validation_below else "train"


def build(recordings: str, out_dir: str, test_below: int = 5, validation_below: int = 10) -> dict:
    """Copies FSDD into `out_dir` (replaced as a whole) and returns the clip count of each split.

    Args:
        recordings: The folder of `{digit}_{speaker}_{index}.wav` files (`KEEPWHAT_FSDD`).
        out_dir: The audiofolder to write: `{split}/{digit}/{file name}`.
        test_below: Indices below this are test.
        validation_below: Indices from `test_below` up to below this are validation.
    """
    if not 0 < test_below < validation_below:
        raise ValueError(
            f"test_below={test_below} and validation_below={validation_below} leave an empty "
            "split; pass 0 < test_below < validation_below (FSDD's indices run 0-49)."
        )
    matches = [m for m in map(FILE_NAME.fullmatch, sorted(os.listdir(recordings))) if m]
    if not matches:
        raise FileNotFoundError(
            f"No FSDD recordings named like 0_george_0.wav in {recordings}; point --fsdd (or "
            "KEEPWHAT_FSDD) at FSDD's recordings folder."
        )
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    counts: dict[str, int] = {}
    # Staged beside the output and moved in whole, so an interrupted copy leaves no half dataset.
    with tempfile.TemporaryDirectory(dir=parent, prefix=".fsdd-layout-") as work:
        staging = os.path.join(work, "out")
        for match in matches:
            split = split_of(int(match["index"]), test_below, validation_below)
            folder = os.path.join(staging, split, match["digit"])
            os.makedirs(folder, exist_ok=True)
            shutil.copyfile(
                os.path.join(recordings, match.string), os.path.join(folder, match.string)
            )
            counts[split] = counts.get(split, 0) + 1
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    return counts


def main() -> None:
    """Command line: lay FSDD out and print the clip count of each split."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fsdd", default=os.environ.get("KEEPWHAT_FSDD"), help="recordings")
    parser.add_argument("--out", required=True, help="The audiofolder to write (replaced).")
    parser.add_argument("--test_below", type=int, default=5)
    parser.add_argument("--validation_below", type=int, default=10)
    args = parser.parse_args()
    if not args.fsdd:
        parser.error("--fsdd is required (or set KEEPWHAT_FSDD to FSDD's recordings folder)")
    counts = build(args.fsdd, args.out, args.test_below, args.validation_below)
    print(f"{sum(counts.values())} clips in {args.out}: {counts}")


if __name__ == "__main__":
    main()
