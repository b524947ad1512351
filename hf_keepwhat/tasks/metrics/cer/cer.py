"""Character error rate, computed with jiwer."""

import datasets
import evaluate
import jiwer


class CER(evaluate.Metric):
    """Corpus character error rate (jiwer's `cer`): character edits over reference characters."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Character error rate over the whole corpus.",
            citation="",
            inputs_description="predictions, references: lists of transcripts.",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        return {"cer": float(jiwer.cer(list(references), list(predictions)))}
