"""Train, validation and test splits of a recipe's dataset.

Every choice a run makes (the best checkpoint, the head refit, the depth) is made on validation,
never on test. The validation split is the dataset's own when it has one, a fold when asked,
else carved from train: stratified by label where the labels allow it, and seeded, so the same
command always carves the same clips.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
from sklearn.model_selection import train_test_split

from .audio import AudioDataError, cast_audio, load_audio_dataset, require_column

logger = logging.getLogger(__name__)


def _by_fold(dataset, column: str, folds: list[str], flag: str):
    """(rows not in `folds`, rows in `folds`) of `dataset`, by the values of `column`."""
    require_column(dataset.column_names, column, "fold", "--fold_column")
    wanted = {str(v) for v in folds}
    values = [str(v) for v in dataset[column]]
    chosen = [i for i, value in enumerate(values) if value in wanted]
    if not chosen or len(chosen) == len(values):
        raise AudioDataError(
            f"{flag} {sorted(wanted)} selects {len(chosen)} of {len(values)} rows; the folds "
            f"are {sorted(set(values))}."
        )
    rest = [i for i, value in enumerate(values) if value not in wanted]
    return dataset.select(rest), dataset.select(chosen)


def fold_split(dataset, data_args):
    """Train and test splits by fold: the test split holds the rows of `--test_fold`.

    Args:
        dataset: The train split, with a fold column.
        data_args: The parsed `DataArguments`.
    """
    return _by_fold(dataset, data_args.fold_column, data_args.test_fold, "--test_fold")


def _stratifiable(labels: list) -> bool:
    """Single labels (not lists or text longer than a class name) with two rows per class at least."""
    if not labels or isinstance(labels[0], list | tuple | dict):
        return False
    counts = Counter(labels)
    return min(counts.values()) >= 2 and len(counts) < len(labels) / 2


def carve_validation(train, size: float, label_column: str | None, seed: int):
    """(train, validation): a `size` fraction of `train` held out for validation.

    Stratified by `label_column` when its values are single labels with two rows per class at
    least (every class then has validation rows: scikit-learn's `train_test_split`), otherwise
    a plain seeded random split (multi-label tags, transcripts).

    Args:
        train: The train split.
        size: Fraction held out, in (0, 1).
        label_column: The label column, or None.
        seed: The split's seed (the run's).
    """
    if not 0 < size < 1:
        raise AudioDataError(f"--validation_size {size} must be in (0, 1), e.g. 0.1.")
    indices = np.arange(len(train))
    labels = (
        list(train[label_column]) if label_column and label_column in train.column_names else []
    )
    stratify = labels if _stratifiable(labels) else None
    count = max(round(size * len(train)), len(set(labels)) if stratify else 1)
    if count >= len(train):
        raise AudioDataError(
            f"The train split has {len(train)} rows: too few to hold out a validation split of "
            f"{size:.0%}. Give the dataset a validation split or more rows."
        )
    kept, held_out = train_test_split(
        indices, test_size=count, random_state=seed, shuffle=True, stratify=stratify
    )
    logger.info(
        "validation: %d of %d train rows held out (%s, seed %d)",
        len(held_out),
        len(train),
        "stratified by label" if stratify else "random",
        seed,
    )
    return train.select(sorted(kept)), train.select(sorted(held_out))


def load_splits(data_args, sampling_rate: int, seed: int) -> dict:
    """The `train`, `validation` and `test` splits, decoded and resampled to `sampling_rate`.

    Test: the dataset's test split, `--test_fold`, or `--test_size` of train. Validation: the
    dataset's validation split, `--validation_fold`, or `--validation_size` of what train is
    left (`carve_validation`).

    Args:
        data_args: The parsed `DataArguments`.
        sampling_rate: The model's input rate.
        seed: The seed of every split carved.
    """
    splits = load_audio_dataset(
        data_args.dataset_name,
        data_args.dataset_config_name,
        data_args.data_dir,
        data_args.filename_label_regex,
        data_args.test_group,
        data_args.test_values,
    )
    if data_args.train_split not in splits:
        raise AudioDataError(
            f"The dataset has no split {data_args.train_split!r}; it has {list(splits)}."
        )
    train = splits[data_args.train_split]
    if data_args.test_fold:
        train, test = fold_split(train, data_args)
    elif data_args.test_split in splits:
        test = splits[data_args.test_split]
    else:
        logger.warning(
            "No %r split: holding out %.0f%% of the train split.",
            data_args.test_split,
            100 * data_args.test_size,
        )
        held_out = train.train_test_split(test_size=data_args.test_size, seed=seed)
        train, test = held_out["train"], held_out["test"]
    if data_args.validation_fold:
        train, validation = _by_fold(
            train, data_args.fold_column, data_args.validation_fold, "--validation_fold"
        )
    elif data_args.validation_split in splits:
        validation = splits[data_args.validation_split]
    else:
        train, validation = carve_validation(
            train, data_args.validation_size, data_args.label_column, seed
        )
    if data_args.max_train_samples:
        train = train.shuffle(seed=seed).select(range(min(data_args.max_train_samples, len(train))))
    limits = {"validation": data_args.max_validation_samples, "test": data_args.max_test_samples}
    out = {"train": train, "validation": validation, "test": test}
    for name, limit in limits.items():
        if limit:
            out[name] = out[name].select(range(min(limit, len(out[name]))))
    return {
        name: cast_audio(split, data_args.audio_column, sampling_rate)
        for name, split in out.items()
    }
