"""What produced a result: the command, the commit of the code and the recipe defaults it ran
with. Recipe reports carry it, and so does every JSON under benchmarks/results, so a result
presented as "the defaults" can be checked against today's defaults
(tests/test_results_current.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from .arguments import recipe_defaults

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def commit(root: str = PACKAGE_ROOT) -> str:
    """The git commit of the checkout at `root`, with `+dirty` when tracked files differ from
    it; "unknown" outside a git checkout (an installed wheel).

    Args:
        root: A folder inside the checkout (default: the one hf_keepwhat is imported from).
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def provenance(argv: list[str] | None = None, root: str = PACKAGE_ROOT) -> dict:
    """`{"command", "commit", "recipe_defaults"}` of this process.

    Args:
        argv: The command line (default `sys.argv`); the script is named relative to `root`.
        root: The checkout the command ran in.
    """
    argv = list(sys.argv if argv is None else argv) or [""]
    script = argv[0]
    if script.endswith(".py"):  # a script: `python path/relative/to/the/checkout.py`
        if os.path.isabs(script) and script.startswith(root):
            script = os.path.relpath(script, root)
        script = f"python {script}"
    else:  # a console script such as `keepwhat`
        script = os.path.basename(script)
    return {
        "command": " ".join([script, *argv[1:]]),
        "commit": commit(root),
        "recipe_defaults": recipe_defaults(),
    }


def changed_defaults(recorded: dict | None, today: dict | None = None) -> list[str]:
    """What differs between the recipe defaults a result recorded and today's, one
    `section.name: recorded -> today` line each (a default added since counts: the result ran
    without it); ["no recipe defaults recorded"] when the result has none.

    Args:
        recorded: The result's `provenance["recipe_defaults"]`.
        today: The defaults to compare with (default `recipe_defaults()`).
    """
    if not recorded:
        return ["no recipe defaults recorded"]
    today = recipe_defaults() if today is None else today
    changes = []
    for section in sorted(set(today) | set(recorded)):
        before, now = recorded.get(section), today.get(section)
        if not isinstance(now, dict) or not isinstance(before, dict):
            if before != now:
                changes.append(f"{section}: {before!r} -> {now!r}")
            continue
        for name in sorted(set(before) | set(now)):
            if before.get(name, "<absent>") != now.get(name, "<absent>"):
                changes.append(
                    f"{section}.{name}: {before.get(name, '<absent>')!r} -> "
                    f"{now.get(name, '<absent>')!r}"
                )
    return changes
