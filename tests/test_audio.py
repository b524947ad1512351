"""Audio data checks: each bad input gets a clear error, multi-channel audio is mixed down."""

import logging

import numpy as np
import pytest
import soundfile as sf
from datasets import Dataset

from hf_keepwhat.tasks.audio import (
    AudioCollator,
    AudioDataError,
    cast_audio,
    checked_waveform,
    dataset_from_filenames,
    featurize,
    label_names,
)


def _decoded(tmp_path, name, audio, rate=16000):
    path = tmp_path / name
    sf.write(path, audio, rate)
    dataset = cast_audio(Dataset.from_dict({"audio": [str(path)]}), "audio", 16000)
    return dataset[0]["audio"]


def test_good_audio_passes(tmp_path):
    audio = _decoded(tmp_path, "ok.wav", np.sin(np.arange(1600) / 10).astype(np.float32))
    wave = checked_waveform(audio, 16000, "ok.wav", {})
    assert wave.dtype == np.float32 and wave.shape == (1600,)


def test_resampled_by_datasets(tmp_path):
    audio = _decoded(tmp_path, "8k.wav", np.sin(np.arange(800) / 10).astype(np.float32), rate=8000)
    assert checked_waveform(audio, 16000, "8k.wav", {}).shape == (1600,)


def test_multichannel_is_mixed_down_with_one_warning(tmp_path, caplog):
    stereo = np.stack([np.full(1600, 0.5), np.full(1600, -0.1)], axis=1).astype(np.float32)
    audio = _decoded(tmp_path, "stereo.wav", stereo)
    warned = {}
    with caplog.at_level(logging.WARNING):
        wave = checked_waveform(audio, 16000, "stereo.wav", warned)
        checked_waveform(audio, 16000, "stereo.wav", warned)
    assert np.allclose(wave, 0.2, atol=1e-3)
    assert sum("mixed down" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize(
    "audio, message",
    [
        (np.zeros(0, np.float32), "empty"),
        (np.zeros(1600, np.float32), "silent"),
        (np.array([0.1, np.nan, 0.2], np.float32), "NaN"),
    ],
)
def test_bad_audio(audio, message):
    with pytest.raises(AudioDataError, match=f"clip.wav: .*{message}"):
        checked_waveform({"array": audio, "sampling_rate": 16000}, 16000, "clip.wav", {})


def test_wrong_rate_after_resampling():
    audio = {"array": np.ones(100, np.float32), "sampling_rate": 44100}
    with pytest.raises(AudioDataError, match="44100 Hz after resampling.*takes 16000 Hz"):
        checked_waveform(audio, 16000, "clip.wav", {})


def test_missing_label_column_lists_columns():
    with pytest.raises(
        AudioDataError, match=r"no label column 'label'; its columns are \['audio', 'genre'\]"
    ):
        label_names(Dataset.from_dict({"audio": ["a.wav"], "genre": ["rock"]}), "label")


def test_unknown_test_label(tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"{i}.wav"))
        sf.write(paths[-1], np.sin(np.arange(1600) / (5 + i)).astype(np.float32), 16000)
    train = cast_audio(Dataset.from_dict({"audio": paths, "label": ["yes", "no"]}), "audio", 16000)
    test = cast_audio(Dataset.from_dict({"audio": paths[:1], "label": ["maybe"]}), "audio", 16000)
    names = label_names(train, "label")
    extractor = Wav2Vec2FeatureExtractor()
    featurize(train, extractor, "audio", "label", names)
    with pytest.raises(AudioDataError, match="label 'maybe' does not occur in the train split"):
        featurize(test, extractor, "audio", "label", names, split="test")


def test_filename_regex_and_split(tmp_path):
    for name in ("3_ann_0.wav", "3_ann_7.wav", "4_bob_1.wav", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    splits = dataset_from_filenames(
        str(tmp_path), r"(?P<label>\d)_(?P<speaker>[a-z]+)_(?P<index>\d+)\.wav", "index", ["0", "1"]
    )
    assert sorted(splits["test"]["label"]) == ["3", "4"]
    assert splits["train"]["speaker"] == ["ann"]
    with pytest.raises(AudioDataError, match=r"needs a named group \(\?P<label>"):
        dataset_from_filenames(str(tmp_path), r"(\d)_.*\.wav")


def test_collator_pads_and_casts():
    from transformers import Wav2Vec2FeatureExtractor

    collator = AudioCollator(Wav2Vec2FeatureExtractor(return_attention_mask=True))
    batch = collator(
        [{"input_values": [0.1] * 10, "labels": 1}, {"input_values": [0.2] * 6, "labels": 0}]
    )
    assert batch["input_values"].shape == (2, 10) and batch["attention_mask"][1].sum() == 6
    assert batch["labels"].tolist() == [1, 0]
