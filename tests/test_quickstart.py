"""The README's usage example (examples/quickstart.py) runs on the real assets."""

import os
import re
import subprocess
import sys

import pytest
from conftest import real_asset

# Real weights, real data or subprocess runs: `make test-all` (CI), not `make test`.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_runs(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "KEEPWHAT_WHISPER_TINY": real_asset("KEEPWHAT_WHISPER_TINY"),
        "KEEPWHAT_FSDD": real_asset("KEEPWHAT_FSDD"),
        "HF_DATASETS_CACHE": str(tmp_path / "cache"),
    }
    script = os.path.join(ROOT, "examples", "quickstart.py")
    result = subprocess.run(
        [sys.executable, script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    removed = float(re.search(r"encoder parameters removed: ([\d.]+)%", result.stdout)[1])
    assert abs(removed - 50) <= 5
    assert (tmp_path / "out" / "quickstart" / "pruned" / "README.md").exists()
