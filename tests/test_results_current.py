"""Results that stay true: every JSON under benchmarks/results says what produced it, a result
presented as "the defaults" ran with today's defaults, and the rendered documents are what their
renderer writes from the JSON today."""

import copy
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from hf_keepwhat.tasks.provenance import changed_defaults

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "benchmarks"))
#: The results the README and docs/results.md present as what a command gives with its defaults
#: (`make demo`; the main job "with no tuning flag").
PRESENTED_AS_DEFAULTS = ("demo_fsdd_report.json", "recipe_gm_base_at_tiny.json")


def _provenances(data: dict) -> list[dict | None]:
    """A result's provenance: its own, or each row's."""
    if "provenance" in data:
        return [data["provenance"]]
    rows = data.get("rows")
    rows = rows.values() if isinstance(rows, dict) else rows or []
    return [row.get("provenance") for row in rows] or [None]


@pytest.mark.parametrize("name", sorted(p.name for p in RESULTS.glob("*.json")))
def test_every_result_records_the_command_and_commit_that_produced_it(name):
    for record in _provenances(json.loads((RESULTS / name).read_text())):
        assert record is not None, f"{name} does not record its provenance"
        assert record["command"].startswith(("python ", "keepwhat ", "make ")), name
        assert record["commit"], name
        assert "recipe_defaults" in record, name


@pytest.mark.parametrize("name", PRESENTED_AS_DEFAULTS)
def test_a_result_presented_as_the_defaults_ran_with_todays(name):
    (record,) = _provenances(json.loads((RESULTS / name).read_text()))
    changes = changed_defaults(record["recipe_defaults"])
    assert not changes, f"{name} ran with other defaults than today's ({changes}): re-run it"


def test_a_hand_edited_default_is_noticed():
    data = json.loads((RESULTS / PRESENTED_AS_DEFAULTS[1]).read_text())
    edited = copy.deepcopy(data["provenance"]["recipe_defaults"])
    edited["mask"]["mask_learning_rate"] = 0.03
    del edited["run"]["finetune_steps"]
    assert changed_defaults(edited) == [
        "mask.mask_learning_rate: 0.03 -> 0.02",
        f"run.finetune_steps: '<absent>' -> {data['provenance']['recipe_defaults']['run']['finetune_steps']!r}",
    ]
    assert changed_defaults(None) == ["no recipe defaults recorded"]


@pytest.mark.slow
def test_the_rendered_documents_are_what_the_renderer_writes_today(tmp_path):
    import render_results

    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    render_results.main(str(tmp_path))
    for name in ("README.md", "docs/results.md", "docs/research.md"):
        assert (tmp_path / name).read_text() == (ROOT / name).read_text(), (
            f"{name} differs from what benchmarks/render_results.py renders: run it and commit"
        )
    assert sorted(os.listdir(tmp_path / "docs")) == sorted(os.listdir(ROOT / "docs"))
