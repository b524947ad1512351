"""F1 score, macro-averaged over classes by default."""

import datasets
import evaluate
from sklearn.metrics import f1_score


class F1(evaluate.Metric):
    """Single-label F1 (scikit-learn's `f1_score`); `average="macro"` unless told otherwise."""

    def _info(self):
        return evaluate.MetricInfo(
            description="F1 score; macro average over classes by default.",
            citation="",
            inputs_description="predictions, references: lists of integer class ids; average.",
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references, average="macro"):
        return {"f1": float(f1_score(references, predictions, average=average))}
