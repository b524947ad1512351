"""Multi-label audio tagging (e.g. MagnaTagATune): BCE loss, mAP and ROC-AUC.

    python recipes/tag.py --model_name_or_path facebook/wav2vec2-base \
        --dataset_name YOUR/music-tagging-dataset --label_column tags \
        --target_sparsity 0.5 --output_dir out/tags --max_steps 5000
"""

import numpy as np
import torch
from transformers import AutoModelForAudioClassification

from hf_keepwhat.tasks import Task, load_metric, main, prepare_labelled_audio

MAP = load_metric("mean_average_precision")
ROC_AUC = load_metric("roc_auc")


def bce_with_penalty(outputs, labels, num_items_in_batch=None):
    """The audio classifiers' own loss is single-label cross-entropy; tagging needs BCE. What a
    MaskModel adds to the task loss (sparsity penalty, distillation) is added here because the
    model computes no loss itself."""
    loss = torch.nn.functional.binary_cross_entropy_with_logits(outputs.logits, labels.float())
    return loss + getattr(outputs, "auxiliary_loss", 0.0)


def compute_metrics(prediction):
    """mAP and macro ROC-AUC of the sigmoid scores."""
    scores = 1.0 / (1.0 + np.exp(-prediction.predictions))
    labels = prediction.label_ids.astype(np.int32)
    return {
        **MAP.compute(prediction_scores=scores, references=labels),
        **ROC_AUC.compute(prediction_scores=scores, references=labels),
    }


TASK = Task(
    name="audio tagging",
    auto_class=AutoModelForAudioClassification,
    metric="mean_average_precision",
    prepare=prepare_labelled_audio(multi_label=True),
    compute_metrics=compute_metrics,
    compute_loss_func=bce_with_penalty,
    card_task="multi-label audio tagging",
)

if __name__ == "__main__":
    main(TASK)
