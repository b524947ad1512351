"""What produced a result: every JSON under benchmarks/results records the command, the commit and
the recipe defaults it ran with, so `tests/test_results_current.py` can tell a result presented
as "the defaults" from one the defaults have since moved away from."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from hf_keepwhat.tasks.arguments import recipe_defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commit() -> str:
    """The checkout's commit, `+dirty` when files differ from it ("unknown" outside git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def provenance(argv: list[str] | None = None) -> dict:
    """`{"command", "commit", "recipe_defaults"}` of this process.

    Args:
        argv: The command line (default `sys.argv`).
    """
    argv = sys.argv if argv is None else argv
    script = os.path.relpath(os.path.abspath(argv[0]), ROOT) if argv else ""
    return {
        "command": " ".join(["python", script, *argv[1:]]),
        "commit": commit(),
        "recipe_defaults": recipe_defaults(),
    }


def append_row(path: str, row: dict) -> None:
    """Appends `row`, with its provenance, to the `rows` of the JSON file at `path` (created when
    missing), rewriting the file whole.

    Args:
        path: The results file.
        row: One measured row.
    """
    data = {"rows": []}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    data["rows"].append({**row, "provenance": provenance()})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)
