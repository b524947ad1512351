"""`from_pretrained` with transformers' weight-loading report summarised when it says what is
expected.

Loading a seq2seq checkpoint (Whisper) as an encoder classifier makes transformers print a table
of ~100 UNEXPECTED decoder weights and MISSING head weights: expected, and worth one line. Any
other unexpected, missing or mismatched weight is still reported in full.
"""

from __future__ import annotations

import logging

from transformers.utils import logging as hf_logging

logger = logging.getLogger(__name__)

#: Weights a seq2seq checkpoint holds that an encoder-only model leaves out.
DECODER_PREFIXES = ("model.decoder.", "decoder.", "proj_out.")
#: Modules of a new task head: missing from a pretrained checkpoint by design.
HEAD_MODULES = ("projector", "classifier", "layer_weights", "lm_head", "head")


def _expected(info: dict) -> bool:
    unexpected_ok = all(k.startswith(DECODER_PREFIXES) for k in info["unexpected_keys"])
    missing_ok = all(k.split(".")[0] in HEAD_MODULES for k in info["missing_keys"])
    return unexpected_ok and missing_ok and not info.get("mismatched_keys")


def load_pretrained(auto_class, path: str, **kwargs):
    """`auto_class.from_pretrained(path, **kwargs)`, logging one line when the only weights left
    out are a seq2seq decoder's and the only new ones a task head's, and the full lists otherwise.

    Args:
        auto_class: A transformers Auto class (or model class) with `from_pretrained`.
        path: Hub id or local folder.
        **kwargs: Passed to `from_pretrained` (labels, config changes).
    """
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report: summarised below instead
    try:
        model, info = auto_class.from_pretrained(path, output_loading_info=True, **kwargs)
    finally:
        hf_logging.set_verbosity(previous)
    name = type(model).__name__
    if _expected(info):
        parts = []
        if info["unexpected_keys"]:
            parts.append(
                f"{len(info['unexpected_keys'])} decoder weights of the checkpoint left out "
                "(encoder only)"
            )
        if info["missing_keys"]:
            new = sorted({k.split(".")[0] for k in info["missing_keys"]})
            parts.append(f"new task head: {', '.join(new)}")
        if parts:
            logger.info("loaded %s from %s: %s", name, path, "; ".join(parts))
    else:
        for kind in ("unexpected_keys", "missing_keys", "mismatched_keys"):
            if info.get(kind):
                logger.warning(
                    "loading %s from %s: %s %s", name, path, kind.replace("_", " "), info[kind]
                )
    return model
