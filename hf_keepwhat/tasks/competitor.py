"""The alternative a budget in another model's terms names: with `--match_macs_of MODEL` (or
`--match_params_of`) and weights that train (`--train_backbone`, the classification default, or
`--finetune_steps`), MODEL itself, every weight fine-tuned with the same data, carve and steps,
at `--finetune_learning_rate` (5e-5, as transformers' audio-classification example). The question
the user asked was "do I take MODEL, or this model pruned to its cost?": the report answers it
with training in both arms, not against a frozen probe nobody would deploy.
"""

from __future__ import annotations

import logging
import os

from transformers import AutoFeatureExtractor

from ..config import MaskConfig
from ..finetuning import finetune
from ..layouts import get_layout
from ..model import get_mask_model
from ..profiling import count_macs
from .audio import AudioDataError
from .loading import load_pretrained
from .run import scores

logger = logging.getLogger("hf_keepwhat.recipe")
PHASE = "competitor"


def _same_features(ours, theirs) -> bool:
    """Whether two feature extractors compute the same input (then the splits are shared)."""
    keys = ("feature_size", "sampling_rate", "hop_length", "n_fft", "padding_value")
    return type(ours) is type(theirs) and all(
        getattr(ours, k, None) == getattr(theirs, k, None) for k in keys
    )


def competitor_model(run, path: str, config):
    """MODEL with the run's task head and window, every unit kept; None (and why, logged) when
    its weights or features do not fit the run."""
    try:
        extractor = AutoFeatureExtractor.from_pretrained(path)
        model = load_pretrained(run.task.auto_class, path, **run.model_kwargs)
    except (OSError, ValueError, AudioDataError) as e:
        logger.info("competitor: %s has no loadable model (%s); not trained", path, e)
        return None
    if not _same_features(run.collator.feature_extractor, extractor):
        logger.info("competitor: %s takes other input features; not trained", path)
        return None
    dense = MaskConfig(target_sparsity=0.0, max_input_seconds=config.max_input_seconds)
    return get_mask_model(model, dense).prune(feature_extractor=run.collator.feature_extractor)


def competitor_steps(run, config) -> int:
    """The steps our arm trains its weights for, which the competitor gets too: the masks'
    steps with `train_backbone` (plus `--finetune_steps` after pruning), else 0."""
    steps = run.run_args.finetune_steps
    if config.train_backbone:
        steps += run.training_args.max_steps
    return steps


def competitor_baseline(run, budget: dict | None, config) -> dict | None:
    """The fine-tuned competitor's record (its metrics on validation and test, each clip's
    correctness, its MACs and latency), resumable like every phase; None when there is no model
    to compete with or the run trains no weight.

    Args:
        run: The recipe's `Run`.
        budget: The budget record (`--match_*_of` names the competitor).
        config: The run's MaskConfig (window).
    """
    steps = competitor_steps(run, config)
    if not budget or not budget["asked"].startswith("match_") or not steps:
        return None
    done = run.folder.done(PHASE)
    if done is not None:
        return done or None
    run.folder.folder(PHASE)
    model = competitor_model(run, str(budget["value"]), config)
    if model is None:
        run.folder.finish(PHASE, {})
        return None
    args = run.finetune_arguments(PHASE, steps)
    logger.info(
        "competitor: %s, every weight fine-tuned; %s",
        os.path.basename(os.path.normpath(str(budget["value"]))),
        run.describe_training(args),
    )
    finetune(model, args, run.splits["train"], eval_dataset=run.splits["validation"],
             compute_metrics=run.task.compute_metrics, callbacks=run.checkpoint_callbacks(),
             resume_from_checkpoint=run.last_checkpoint(args), **run.task_data())  # fmt: skip
    metrics = run.evaluate(model, PHASE)
    logger.info("competitor: %s", scores(metrics, run.task.metric))
    layout = get_layout(model, MaskConfig(max_input_seconds=config.max_input_seconds))
    record = {
        "model": os.path.basename(os.path.normpath(str(budget["value"]))),
        "metrics": metrics["test"],
        "validation_metrics": metrics["validation"],
        "correct": metrics.get("correct"),
        "macs": count_macs(layout.backbone, layout.reference_inputs()),
        "steps": steps,
    }
    run.folder.finish(PHASE, record)
    return record
