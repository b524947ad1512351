"""ROC AUC, macro-averaged over the classes of a multi-label task."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import roc_auc_score


class RocAuc(evaluate.Metric):
    """Macro ROC AUC (scikit-learn's `roc_auc_score`) from per-class scores."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Area under the ROC curve, averaged over classes.",
            citation="",
            inputs_description="prediction_scores: per-class scores; references: 0/1 per class.",
            features=datasets.Features(
                {
                    "prediction_scores": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int32")),
                }
            ),
        )

    def _compute(self, prediction_scores, references):
        references = np.asarray(references)
        # AUC needs both a positive and a negative for a class.
        defined = (references.sum(axis=0) > 0) & (references.sum(axis=0) < len(references))
        if not defined.any():  # e.g. a validation split of one clip: AUC is undefined, not an error
            return {"roc_auc": float("nan")}
        score = roc_auc_score(
            references[:, defined], np.asarray(prediction_scores)[:, defined], average="macro"
        )
        return {"roc_auc": float(score)}
