"""benchmarks/provenance.py's `append_row`: arms run side by side append to one results file,
and none of their rows is lost."""

import json
import multiprocessing
from pathlib import Path

from benchmarks.provenance import append_row

PROCESSES, ROWS_EACH = 6, 5


def _append(path: str, worker: int) -> None:
    for index in range(ROWS_EACH):
        append_row(path, {"arm": "a", "worker": worker, "index": index})


def test_rows_appended_at_the_same_time_by_several_processes_are_all_kept(tmp_path):
    path = str(tmp_path / "rows.json")
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append, args=(path, w)) for w in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    rows = json.loads(Path(path).read_text(encoding="utf-8"))["rows"]
    assert sorted((r["worker"], r["index"]) for r in rows) == [
        (w, i) for w in range(PROCESSES) for i in range(ROWS_EACH)
    ]
    assert all(r["provenance"]["command"] for r in rows)
