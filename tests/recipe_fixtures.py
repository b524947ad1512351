"""Tiny models saved to folders and synthetic audio files, for running recipes offline."""

import os

import numpy as np
import soundfile as sf
import torch
from tiny_models import tiny_wav2vec2, tiny_wav2vec2_ctc, tiny_whisper
from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor


def save_tiny_model(kind: str, folder: str, with_head: bool = True, **overrides) -> str:
    """Saves a tiny random model with its feature extractor, as a Hub checkpoint would be.

    Args:
        kind: `"whisper"` or `"wav2vec2"`.
        folder: Where to save.
        with_head: False leaves the task head out of the checkpoint (as a pretrained encoder on
            the Hub has none), so loading it builds a new, randomly initialised one.
        **overrides: Config overrides.
    """
    torch.manual_seed(0)
    if kind == "whisper":
        model = tiny_whisper(**{"max_source_positions": 100, **overrides})  # a 2 s window
        extractor = WhisperFeatureExtractor(feature_size=16, chunk_length=2)
    else:
        model = tiny_wav2vec2(**overrides)
        extractor = Wav2Vec2FeatureExtractor(return_attention_mask=True)
    state = model.state_dict()
    if not with_head:
        state = {k: v for k, v in state.items() if not k.startswith(("projector", "classifier"))}
    model.save_pretrained(folder, state_dict=state)
    extractor.save_pretrained(folder)
    return folder


def save_tiny_ctc_model(folder: str, vocab: list[str]) -> str:
    """Saves a tiny random Wav2Vec2ForCTC with a character tokenizer over `vocab`.

    Args:
        folder: Where to save.
        vocab: The characters (besides the special tokens).
    """
    import json

    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2Processor

    os.makedirs(folder, exist_ok=True)
    tokens = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate(vocab)}}
    vocab_file = os.path.join(folder, "vocab.json")
    with open(vocab_file, "w") as f:
        json.dump(tokens, f)
    tokenizer = Wav2Vec2CTCTokenizer(vocab_file, word_delimiter_token="|")
    processor = Wav2Vec2Processor(Wav2Vec2FeatureExtractor(return_attention_mask=True), tokenizer)
    torch.manual_seed(0)
    model = tiny_wav2vec2_ctc(vocab_size=len(tokenizer), pad_token_id=0, ctc_loss_reduction="mean")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tone(label: int, seconds: float, rate: int, rng) -> np.ndarray:
    """A noisy tone whose pitch says the label."""
    t = np.arange(int(seconds * rate)) / rate
    return (
        0.5 * np.sin(2 * np.pi * (220 + 180 * label) * t) + 0.05 * rng.standard_normal(t.size)
    ).astype(np.float32)


def write_digit_folder(
    folder: str, labels=3, speakers=("ann", "bob"), per_speaker=6, rate=8000
) -> str:
    """FSDD-style files `{label}_{speaker}_{index}.wav` at 8 kHz (resampled by the recipe).

    Args:
        folder: Where to write.
        labels: Number of classes.
        speakers: Speaker names.
        per_speaker: Recordings per label and speaker (index 0 and 1 are the test split).
        rate: Sampling rate of the files.
    """
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for label in range(labels):
        for speaker in speakers:
            for index in range(per_speaker):
                audio = tone(label, 0.4 + 0.05 * index, rate, rng)
                sf.write(os.path.join(folder, f"{label}_{speaker}_{index}.wav"), audio, rate)
    return folder
