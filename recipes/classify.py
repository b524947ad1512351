"""Single-label audio classification: keyword spotting, spoken digits, genre, instrument,
environmental sound, intent.

    python recipes/classify.py --model_name_or_path openai/whisper-tiny.en --preset urbansound8k \
        --max_input_seconds 4 --target_sparsity 0.5 --output_dir out/urban --max_steps 2000
    accelerate launch recipes/classify.py ...   # same arguments, several processes
"""

import numpy as np
from transformers import AutoModelForAudioClassification

from hf_keepwhat.tasks import Task, load_metric, main, prepare_labelled_audio

ACCURACY = load_metric("accuracy")
BALANCED = load_metric("balanced_accuracy")
F1 = load_metric("f1")


def compute_metrics(prediction):
    """Accuracy, balanced (macro) accuracy and macro-F1 of the arg-max class."""
    predicted = np.argmax(prediction.predictions, axis=-1)
    labels = prediction.label_ids
    return {
        **ACCURACY.compute(predictions=predicted, references=labels),
        **BALANCED.compute(predictions=predicted, references=labels),
        **F1.compute(predictions=predicted, references=labels, average="macro"),
    }


TASK = Task(
    name="audio classification",
    auto_class=AutoModelForAudioClassification,
    metric="accuracy",
    prepare=prepare_labelled_audio(multi_label=False),
    compute_metrics=compute_metrics,
    card_task="single-label audio classification",
    selects_depth=True,
    trains_weights=True,
)

if __name__ == "__main__":
    main(TASK)
