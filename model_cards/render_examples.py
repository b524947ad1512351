"""Renders one example card per artifact kind (`examples/pruned_model.md`,
`examples/mask_adapter.md`) from real Whisper tiny.en ($KEEPWHAT_WHISPER_TINY), so that a reader
sees what a published card looks like. The masks are magnitude masks at half the encoder's MACs
(an illustration of the card, not a trained model): the cards say so, and state no metric.

    python model_cards/render_examples.py     # or: make cards
"""

from __future__ import annotations

import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import WhisperForAudioClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from hf_keepwhat import MaskConfig, get_mask_model, set_structured_masks  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ID = "your-name/whisper-tiny.en-keepwhat-example"


def main() -> None:
    """Writes the two example cards next to the templates."""
    hf_logging.set_verbosity_error()
    model_path = os.environ.get("KEEPWHAT_WHISPER_TINY", "openai/whisper-tiny.en")
    model = WhisperForAudioClassification.from_pretrained(model_path, num_labels=10)
    model.config._name_or_path = "openai/whisper-tiny.en"  # the card names the Hub model
    config = MaskConfig(budget="macs", target_sparsity=0.5, max_input_seconds=3)
    mm = get_mask_model(model, config)
    set_structured_masks(mm, 0.5, "l1")
    pruned = mm.prune()
    pruned.set_card_info(task_description="an example (magnitude masks, not trained on a task)")
    with tempfile.TemporaryDirectory() as folder:
        mm.save_pretrained(os.path.join(folder, "adapter"), repo_id=REPO_ID + "-masks")
        pruned.save_pretrained(os.path.join(folder, "pruned"), repo_id=REPO_ID)
        os.makedirs(os.path.join(HERE, "examples"), exist_ok=True)
        for kind, sub in (("mask_adapter", "adapter"), ("pruned_model", "pruned")):
            target = os.path.join(HERE, "examples", f"{kind}.md")
            shutil.copyfile(os.path.join(folder, sub, "README.md"), target)
            print(f"wrote {target}")


if __name__ == "__main__":
    main()
