"""Mean average precision (mAP) over the classes of a multi-label task."""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import average_precision_score


class MeanAveragePrecision(evaluate.Metric):
    """Macro mAP (scikit-learn's `average_precision_score`) from per-class scores."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Mean over classes of the average precision of the class scores.",
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
        present = references.sum(axis=0) > 0  # AP is undefined for a class with no positive
        if not present.any():
            return {"mean_average_precision": float("nan")}
        score = average_precision_score(
            references[:, present], np.asarray(prediction_scores)[:, present], average="macro"
        )
        return {"mean_average_precision": float(score)}
