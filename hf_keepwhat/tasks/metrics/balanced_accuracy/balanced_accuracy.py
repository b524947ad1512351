"""Balanced accuracy: the mean over classes of each class's recall (the paper's "macro"
accuracy, which a majority class cannot inflate)."""

import datasets
import evaluate
from sklearn.metrics import balanced_accuracy_score


class BalancedAccuracy(evaluate.Metric):
    """Single-label balanced accuracy (scikit-learn's `balanced_accuracy_score`)."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Mean over classes of the recall of each class.",
            citation="",
            inputs_description="predictions, references: lists of integer class ids.",
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references):
        return {"balanced_accuracy": float(balanced_accuracy_score(references, predictions))}
