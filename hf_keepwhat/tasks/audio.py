"""Audio data for the recipes: datasets in, checked and resampled audio, model features, batches.

Decoding and resampling are `datasets`' `Audio` feature (torchcodec); features are the model's own
feature extractor. What is written here is what neither does: clear errors for bad audio and
labels, and collators for the three task families.
"""

from __future__ import annotations

import logging
import os
import re
import wave
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Audio, Dataset, DatasetDict, load_dataset

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")


class AudioDataError(ValueError):
    """A problem with the user's data (audio, labels, columns), stated so it can be fixed."""


def dataset_from_filenames(
    data_dir: str, pattern: str, test_group: str | None = None, test_values: list[str] | None = None
) -> DatasetDict:
    """A dataset whose labels (and split) are read from file names, e.g. FSDD's
    `{digit}_{speaker}_{index}.wav`.

    Args:
        data_dir: Folder of audio files.
        pattern: Regular expression matched against each file name; its named groups become
            columns, and the group `label` is the label.
        test_group: Name of a group that decides the split (e.g. `index`); None puts every file
            in `train`.
        test_values: Values of `test_group` that go to the `test` split (e.g. 0 1 2 3 4).
    """
    regex = re.compile(pattern)
    if "label" not in regex.groupindex:
        raise AudioDataError(
            f"--filename_label_regex {pattern!r} needs a named group (?P<label>...)."
        )
    if test_group is not None and test_group not in regex.groupindex:
        raise AudioDataError(f"--test_group {test_group!r} is not a named group of {pattern!r}.")
    rows = {"train": [], "test": []}
    for name in sorted(os.listdir(data_dir)):
        match = regex.fullmatch(name)
        if not match or not name.lower().endswith(AUDIO_EXTENSIONS):
            continue
        row = {"audio": os.path.join(data_dir, name), **match.groupdict()}
        in_test = test_group is not None and match[test_group] in set(test_values or [])
        rows["test" if in_test else "train"].append(row)
    if not rows["train"]:
        raise AudioDataError(
            f"No audio file in {data_dir} matches --filename_label_regex {pattern!r}."
        )
    splits = {k: Dataset.from_list(v) for k, v in rows.items() if v}
    return DatasetDict(splits)


def load_audio_dataset(
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    data_dir: str | None = None,
    filename_label_regex: str | None = None,
    test_group: str | None = None,
    test_values: list[str] | None = None,
) -> DatasetDict:
    """Loads a Hub dataset, an `audiofolder` folder, or files named by a regex.

    Args:
        dataset_name: Hub dataset id (ignored when `data_dir` is given).
        dataset_config_name: Its configuration name.
        data_dir: Local folder: `audiofolder` layout, or flat files with `filename_label_regex`.
        filename_label_regex: See `dataset_from_filenames`.
        test_group: See `dataset_from_filenames`.
        test_values: See `dataset_from_filenames`.
    """
    if data_dir and filename_label_regex:
        return dataset_from_filenames(data_dir, filename_label_regex, test_group, test_values)
    if data_dir:
        return load_dataset("audiofolder", data_dir=data_dir)
    if dataset_name:
        return load_dataset(dataset_name, dataset_config_name)
    raise AudioDataError("Give --dataset_name (a Hub dataset) or --data_dir (a local folder).")


def require_column(columns: list[str], column: str, what: str, flag: str, where: str = "dataset"):
    """Raises an `AudioDataError` naming the missing column, the columns there are, and the flag.

    Args:
        columns: The dataset's (or split's) column names.
        column: The column needed.
        what: What it should hold, e.g. "label".
        flag: The command-line flag that names it, e.g. "--label_column".
        where: "dataset", or "<split> split".
    """
    if column not in columns:
        raise AudioDataError(
            f"The {where} has no {what} column {column!r}; its columns are {columns}. "
            f"Name the right one with {flag}."
        )


def cast_audio(dataset, audio_column: str, sampling_rate: int):
    """Decodes `audio_column` with datasets' `Audio` feature, resampled to `sampling_rate`.

    Args:
        dataset: A `Dataset` or `DatasetDict`.
        audio_column: The column holding audio (paths or decoded audio).
        sampling_rate: The rate the model's feature extractor takes.
    """
    columns = dataset.column_names
    columns = columns if isinstance(columns, list) else next(iter(columns.values()))
    require_column(columns, audio_column, "audio", "--audio_column")
    return dataset.cast_column(audio_column, Audio(sampling_rate=sampling_rate))


def checked_waveform(audio, expected_rate: int, where: str, warned: dict) -> np.ndarray:
    """A mono float32 waveform at `expected_rate`, or a clear error saying what is wrong.

    Args:
        audio: A decoded sample of datasets' `Audio` feature (torchcodec `AudioDecoder`, or a dict
            with `array` and `sampling_rate`).
        expected_rate: The feature extractor's sampling rate.
        where: Which example this is, for messages (e.g. a file name).
        warned: Shared between calls so that mixing down is reported once, not per file.
    """
    if hasattr(audio, "get_all_samples"):
        samples = audio.get_all_samples()
        array, rate = samples.data.numpy(), samples.sample_rate
    else:
        array, rate = np.asarray(audio["array"]), audio["sampling_rate"]
    if rate != expected_rate:
        raise AudioDataError(
            f"{where}: audio arrives at {rate} Hz after resampling, but the feature extractor "
            f"takes {expected_rate} Hz. Cast the column with Audio(sampling_rate={expected_rate})."
        )
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2 and array.shape[0] > 1:
        if not warned.get("multichannel"):
            logger.warning(
                "%s has %d channels: multi-channel audio is mixed down to mono (further files "
                "are mixed down without a warning).",
                where,
                array.shape[0],
            )
            warned["multichannel"] = True
        array = array.mean(axis=0)
    array = array.reshape(-1)
    if array.size == 0:
        raise AudioDataError(
            f"{where}: the audio is empty (0 samples). Remove it from the dataset."
        )
    if not np.isfinite(array).all():
        raise AudioDataError(
            f"{where}: the audio contains NaN or infinite samples; the file is corrupt."
        )
    if np.abs(array).max() == 0.0:
        raise AudioDataError(
            f"{where}: the audio is silent (every sample is 0). Remove it or check the file."
        )
    return array


def declared_seconds(value: dict) -> float | None:
    """The duration a PCM WAV file's header declares (None for other files or in-memory audio):
    FFmpeg decodes a truncated WAV without complaint, so this is what reveals the truncation."""
    path = value.get("path") if isinstance(value, dict) else None
    if value.get("bytes") is not None or not path or not path.lower().endswith(".wav"):
        return None
    try:
        with wave.open(path) as f:
            return f.getnframes() / f.getframerate()
    except (wave.Error, EOFError, OSError):  # not PCM (float WAV): the decoder alone decides
        return None


def longest_clip_seconds(dataset, audio_column: str) -> float:
    """The longest clip of a split, in seconds: read from WAV headers where the files have them,
    decoded otherwise (and then checked, as featurizing would).

    Args:
        dataset: A split whose `audio_column` is an `Audio` column.
        audio_column: The audio column.
    """
    undecoded = dataset.cast_column(audio_column, Audio(decode=False))
    rate = dataset.features[audio_column].sampling_rate or 16_000
    longest, warned = 0.0, {}
    for i, value in enumerate(undecoded[audio_column]):
        seconds = declared_seconds(value)
        if seconds is None:
            seconds = decoded_waveform(value, rate, f"example {i}", warned).size / rate
        longest = max(longest, seconds)
    return longest


def decoded_waveform(value: dict, rate: int, where: str, warned: dict) -> np.ndarray:
    """Decodes one undecoded `Audio` value (`{"path", "bytes"}`) at `rate`, checks it, and turns
    every failure, a decoder's included, into an `AudioDataError` naming the file.

    Args:
        value: The value of an `Audio(decode=False)` column.
        rate: The feature extractor's sampling rate.
        where: Which example this is when the value has no path.
        warned: See `checked_waveform`.
    """
    where = value.get("path") or where
    try:
        array = checked_waveform(
            Audio(sampling_rate=rate).decode_example(value), rate, where, warned
        )
    except AudioDataError:
        raise
    except Exception as e:  # torchcodec's errors are C++ tracebacks: keep their first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AudioDataError(
            f"{where}: the audio cannot be decoded ({first[-160:]}): the file is corrupt, empty "
            "or not audio. Remove it from the dataset."
        ) from e
    declared = declared_seconds(value)
    if declared is not None and array.size / rate < declared - 0.01:
        raise AudioDataError(
            f"{where}: the file is truncated: its header declares {declared:.3f} s of audio, "
            f"it holds {array.size / rate:.3f} s. Replace it or remove it from the dataset."
        )
    return array


def label_names(train: Dataset, label_column: str) -> list[str]:
    """The label vocabulary, from the train split (ClassLabel names, or sorted values).

    Args:
        train: The train split.
        label_column: The label column.
    """
    require_column(train.column_names, label_column, "label", "--label_column")
    feature = train.features[label_column]
    names = getattr(feature, "names", None)
    if names is not None:
        return list(names)
    inner = getattr(feature, "feature", None)  # a Sequence of tags
    if inner is not None and getattr(inner, "names", None) is not None:
        return list(inner.names)
    values = set()
    for value in train[label_column]:
        values.update(value if isinstance(value, list) else [value])
    return sorted(str(v) for v in values)


def _label_index(value, feature, names_index: dict, where: str) -> int:
    key = feature.int2str(value) if hasattr(feature, "int2str") else str(value)
    if key not in names_index:
        raise AudioDataError(
            f"{where}: label {key!r} does not occur in the train split, so the model has no "
            f"output for it. Known labels: {sorted(names_index)[:20]}."
        )
    return names_index[key]


def featurize(
    dataset: Dataset,
    feature_extractor,
    audio_column: str,
    label_column: str,
    names: list[str],
    multi_label: bool = False,
    split: str = "train",
) -> Dataset:
    """Checks each clip, runs the feature extractor and encodes labels.

    Args:
        dataset: One split, with `audio_column` cast to `Audio`.
        feature_extractor: The model's feature extractor.
        audio_column: The audio column.
        label_column: The label column (a tag list when `multi_label`).
        names: The label vocabulary (`label_names`).
        multi_label: Encode labels as multi-hot vectors for tagging.
        split: The split's name, for messages.
    """
    require_column(dataset.column_names, label_column, "label", "--label_column", f"{split} split")
    index = {name: i for i, name in enumerate(names)}
    label_feature = dataset.features[label_column]
    tag_feature = getattr(label_feature, "feature", label_feature)
    rate = feature_extractor.sampling_rate
    warned: dict = {}
    input_name = feature_extractor.model_input_names[0]

    def process(batch, indices):
        waves = [
            decoded_waveform(a, rate, f"{split} example {i}", warned)
            for a, i in zip(batch[audio_column], indices, strict=True)
        ]
        features = feature_extractor(waves, sampling_rate=rate)
        out = {input_name: list(features[input_name])}
        if "attention_mask" in features:
            out["attention_mask"] = list(features["attention_mask"])
        labels = []
        for value, i in zip(batch[label_column], indices, strict=True):
            where = f"{split} example {i}"
            if multi_label:
                hot = np.zeros(len(names), dtype=np.float32)
                for tag in value:
                    hot[_label_index(tag, tag_feature, index, where)] = 1.0
                labels.append(hot)
            else:
                labels.append(_label_index(value, label_feature, index, where))
        out["labels"] = labels
        return out

    undecoded = dataset.cast_column(audio_column, Audio(decode=False))  # decoded per file above
    return undecoded.map(
        process,
        batched=True,
        batch_size=64,
        with_indices=True,
        remove_columns=dataset.column_names,
        desc=f"Feature extraction ({split})",
    )


@dataclass
class AudioCollator:
    """Pads model inputs with the feature extractor and stacks labels.

    Args:
        feature_extractor: The model's feature extractor (its `pad` pads `input_values` and the
            attention mask; Whisper's features have a fixed length already).
    """

    feature_extractor: object

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        labels = [example.pop("labels") for example in examples]
        batch = dict(self.feature_extractor.pad(examples, return_tensors="pt"))
        for key, value in batch.items():
            if value.dtype == torch.float64:  # features come back from Arrow as float64
                batch[key] = value.float()
        label_tensor = torch.as_tensor(np.asarray(labels))
        batch["labels"] = label_tensor.float() if label_tensor.dim() > 1 else label_tensor.long()
        return batch
