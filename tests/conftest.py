"""Test setup: offline Hugging Face stack, tiny models built in code, real assets from env vars."""

import os

# Read at import time by transformers / huggingface_hub: must be set before they are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def real_asset(variable: str) -> str:
    """Path of a real asset named by environment variable `variable`; fails loudly if missing.

    Args:
        variable: `KEEPWHAT_WHISPER_TINY` or `KEEPWHAT_FSDD` (see DESIGN.md, "Assets").
    """
    path = os.environ.get(variable)
    if not path or not os.path.exists(path):
        pytest.fail(
            f"{variable} is {path!r}, which does not exist. Set it to the real asset "
            "(make test sets it to the copies in ../shared)."
        )
    return path
