"""The Free Spoken Digit Dataset's (FSDD) file names and standard split, shared by `deploy.py`
and the tests: recordings `{digit}_{speaker}_{index}.wav`, index 0-4 the 250 test clips."""

from __future__ import annotations

import re

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
