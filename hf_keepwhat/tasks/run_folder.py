"""A recipe's output folder as the record of what is done, so that the same command resumes.

`run.json` holds a fingerprint of the arguments that change results; each finished phase writes
`{phase}/phase.json` with everything the report needs from it. Run again with the same command,
a recipe reads the finished phases back and continues the unfinished one from its last Trainer
checkpoint; with other arguments it refuses (or starts over with `--restart`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil

from ..files import read_json, write_json

logger = logging.getLogger("hf_keepwhat.recipe")

RUN_FILE = "run.json"
PHASE_FILE = "phase.json"
#: Arguments that change where and how a run talks, not what it computes.
NOT_FINGERPRINTED = frozenset(
    {
        "output_dir",
        "logging_dir",
        "report_to",
        "disable_tqdm",
        "log_level",
        "log_level_replica",
        "logging_steps",
        "logging_strategy",
        "logging_first_step",
        "run_name",
        "restart",
        "latency_repeats",
    }
)


def fingerprint(arguments) -> str:
    """A digest of every parsed argument that changes results.

    Args:
        arguments: The parsed argument dataclasses (TrainingArguments included).
    """
    values = {}
    for group in arguments:
        fields = group.to_dict() if hasattr(group, "to_dict") else dataclasses.asdict(group)
        values[type(group).__name__] = {
            k: v for k, v in fields.items() if k not in NOT_FINGERPRINTED
        }
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class RunFolder:
    """The phases already finished in a recipe's output folder.

    Args:
        output_dir: The recipe's `--output_dir`.
        digest: `fingerprint(arguments)` of this run.
        restart: Remove what an earlier run left (`run.json` and its phase folders) first.
        main: Whether this process writes (the others only read).
    """

    def __init__(self, output_dir: str, digest: str, restart: bool, main: bool):
        self.output_dir = output_dir
        run_file = os.path.join(output_dir, RUN_FILE)
        previous = read_json(run_file) if os.path.isfile(run_file) else None
        if previous is not None and restart and main:
            for phase in previous.get("phases", []):
                shutil.rmtree(os.path.join(output_dir, phase), ignore_errors=True)
            previous = None
        if previous is not None and previous["fingerprint"] != digest:
            raise ValueError(
                f"{output_dir} holds a run made with other arguments; run the same command to "
                "resume it, pass --restart to start over there, or choose another --output_dir."
            )
        self.phases: list[str] = list(previous["phases"]) if previous else []
        self.digest = digest
        self.main = main
        if previous is None and main:
            self._write()
        elif previous is not None:
            logger.info("resuming the run in %s", output_dir)

    def _write(self) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        record = {"fingerprint": self.digest, "phases": self.phases}
        write_json(os.path.join(self.output_dir, RUN_FILE), record)

    def folder(self, phase: str) -> str:
        """Where a phase writes (its Trainer checkpoints, its artifacts, `phase.json`).

        Args:
            phase: The phase's name, e.g. "baseline" or "target0.50".
        """
        if phase not in self.phases:
            self.phases.append(phase)
            if self.main:
                self._write()
        return os.path.join(self.output_dir, phase)

    def done(self, phase: str) -> dict | None:
        """The record of a finished phase, or None.

        Args:
            phase: The phase's name.
        """
        path = os.path.join(self.output_dir, phase, PHASE_FILE)
        if not os.path.isfile(path):
            return None
        logger.info("%s: finished earlier, read back from %s", phase, path)
        return read_json(path)

    def finish(self, phase: str, record: dict) -> None:
        """Writes a finished phase's record (main process only; atomic).

        Args:
            phase: The phase's name.
            record: What the report needs from it (JSON).
        """
        if self.main:
            write_json(os.path.join(self.folder(phase), PHASE_FILE), record)
