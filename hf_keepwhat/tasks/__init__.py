"""What task recipes need besides masking and pruning: audio data preparation, metric modules
that load offline, and run reports. Imported on its own (`from hf_keepwhat.tasks import ...`):
it needs `datasets` and `evaluate`, which the core does not.

- `audio`: `load_audio_dataset` (Hub id, `audiofolder` folder, or flat files labelled by a
  file-name regex), `cast_audio`, `featurize`, `label_names`, `AudioCollator`, and the checks
  that raise `AudioDataError` with one clear line;
- `metrics`: `load_metric` (accuracy, f1, mean_average_precision, roc_auc, wer, cer);
- `heads`: `PooledAudioClassifier` / `pooled_classifier`: any backbone's mean-pooled features into
  a linear layer or the paper's MLP (recipes' `--head linear|mlp`);
- `reports`: `write_report` (report.json, report.md, plots), `compare`, `saved_figure`;
- the recipes' run, one idea a module: `arguments` (the command line), `splits` (train,
  validation, test), `budgets` (a budget in the user's terms: `--match_macs_of` ...), `loading`
  (the weight-loading report summarised), `selection` (the best checkpoint within the budget),
  `run_folder` (resume), `run` (the phases) and `recipe` (`main`, `Task`).
"""

from .audio import (
    AudioCollator,
    AudioDataError,
    cast_audio,
    checked_waveform,
    decoded_waveform,
    featurize,
    label_names,
    load_audio_dataset,
    require_column,
)
from .heads import PooledAudioClassifier, audio_backbone, pooled_classifier
from .metrics import load_metric
from .recipe import main, prepare_labelled_audio
from .reports import compare, saved_figure, write_report
from .run import Task

__all__ = [
    "AudioCollator",
    "AudioDataError",
    "Task",
    "PooledAudioClassifier",
    "audio_backbone",
    "cast_audio",
    "checked_waveform",
    "compare",
    "decoded_waveform",
    "featurize",
    "label_names",
    "load_audio_dataset",
    "load_metric",
    "main",
    "prepare_labelled_audio",
    "pooled_classifier",
    "require_column",
    "saved_figure",
    "write_report",
]
