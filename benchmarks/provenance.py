"""Benchmark rows with what produced them (`hf_keepwhat.tasks.provenance`)."""

from __future__ import annotations

import fcntl
import json
import os

from hf_keepwhat.tasks.provenance import provenance


def append_row(path: str, row: dict) -> None:
    """Appends `row`, with its provenance (command, commit, recipe defaults), to the `rows` of
    the JSON file at `path` (created when missing), rewriting the file whole. Runs that append
    to the same file at the same moment each keep their row: the read and the rewrite hold an
    exclusive lock on `path + ".lock"` (two seeds' runs once ended in the same second, and the
    later rewrite dropped the earlier one's row).

    Args:
        path: The results file.
        row: One measured row.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        data = {"rows": []}
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        data["rows"].append({**row, "provenance": provenance()})
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(path + ".tmp", path)


def write_result(path: str, data: dict) -> None:
    """Writes a benchmark's JSON (`hf_keepwhat.files.write_json`: whole or not at all) with its
    provenance (command, commit, recipe defaults) added.

    Args:
        path: The results file.
        data: The measured result.
    """
    from hf_keepwhat.files import write_json

    write_json(path, {**data, "provenance": provenance()})
