"""Word error rate, computed with jiwer."""

import datasets
import evaluate
import jiwer


class WER(evaluate.Metric):
    """Corpus word error rate (jiwer's `wer`): word edits over reference words."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Word error rate over the whole corpus.",
            citation="",
            inputs_description="predictions, references: lists of transcripts.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        return {"wer": float(jiwer.wer(list(references), list(predictions)))}
