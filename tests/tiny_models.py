"""Tiny randomly initialised models of every supported family, built in code (no network)."""

import torch
from transformers import (
    ASTConfig,
    ASTForAudioClassification,
    Data2VecAudioConfig,
    Data2VecAudioForSequenceClassification,
    HubertConfig,
    HubertForSequenceClassification,
    SEWConfig,
    SEWForSequenceClassification,
    UniSpeechConfig,
    UniSpeechForSequenceClassification,
    UniSpeechSatConfig,
    UniSpeechSatForSequenceClassification,
    Wav2Vec2Config,
    Wav2Vec2ConformerConfig,
    Wav2Vec2ConformerForSequenceClassification,
    Wav2Vec2ForCTC,
    Wav2Vec2ForSequenceClassification,
    WavLMConfig,
    WavLMForSequenceClassification,
    WhisperConfig,
    WhisperForAudioClassification,
)

WAV2VEC2_FAMILY = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=48,
    conv_dim=(16, 12, 8),
    conv_stride=(5, 2, 2),
    conv_kernel=(10, 3, 3),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    classifier_proj_size=8,
    num_labels=3,
    mask_time_prob=0.0,
    vocab_size=12,
)


def tiny_whisper(**overrides) -> WhisperForAudioClassification:
    """A 3-layer Whisper encoder classifier with a 1 s input window (50 positions)."""
    config = dict(
        d_model=32,
        encoder_layers=3,
        encoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_layers=1,
        decoder_attention_heads=2,
        num_mel_bins=16,
        max_source_positions=50,
        classifier_proj_size=8,
        num_labels=3,
    )
    config.update(overrides)
    return WhisperForAudioClassification(WhisperConfig(**config)).eval()


def tiny_wav2vec2(**overrides) -> Wav2Vec2ForSequenceClassification:
    """A 3-layer Wav2Vec2 classifier (group-norm feature encoder unless overridden)."""
    return Wav2Vec2ForSequenceClassification(
        Wav2Vec2Config(**{**WAV2VEC2_FAMILY, **overrides})
    ).eval()


def tiny_wav2vec2_ctc(**overrides) -> Wav2Vec2ForCTC:
    """A 3-layer Wav2Vec2 CTC model."""
    return Wav2Vec2ForCTC(Wav2Vec2Config(**{**WAV2VEC2_FAMILY, **overrides})).eval()


def tiny_hubert(**overrides) -> HubertForSequenceClassification:
    """A 3-layer HuBERT classifier."""
    return HubertForSequenceClassification(HubertConfig(**{**WAV2VEC2_FAMILY, **overrides})).eval()


def tiny_data2vec_audio(**overrides) -> Data2VecAudioForSequenceClassification:
    """A 3-layer Data2VecAudio classifier (its conv layers always have channel LayerNorms)."""
    config = Data2VecAudioConfig(**{**WAV2VEC2_FAMILY, **overrides})
    return Data2VecAudioForSequenceClassification(config).eval()


def tiny_unispeech(**overrides) -> UniSpeechForSequenceClassification:
    """A 3-layer UniSpeech classifier."""
    config = UniSpeechConfig(**{**WAV2VEC2_FAMILY, "num_ctc_classes": 12, **overrides})
    return UniSpeechForSequenceClassification(config).eval()


def tiny_unispeech_sat(**overrides) -> UniSpeechSatForSequenceClassification:
    """A 3-layer UniSpeech-SAT classifier."""
    config = UniSpeechSatConfig(**{**WAV2VEC2_FAMILY, **overrides})
    return UniSpeechSatForSequenceClassification(config).eval()


def tiny_sew(**overrides) -> SEWForSequenceClassification:
    """A 3-layer SEW classifier (its transformer runs on a sequence squeezed by 2)."""
    config = SEWConfig(**{**WAV2VEC2_FAMILY, "squeeze_factor": 2, **overrides})
    return SEWForSequenceClassification(config).eval()


def tiny_ast(**overrides) -> ASTForAudioClassification:
    """A 3-layer AST classifier on 64 frames x 16 mel bins."""
    config = dict(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=48,
        patch_size=8,
        frequency_stride=8,
        time_stride=8,
        max_length=64,
        num_mel_bins=16,
        num_labels=3,
    )
    return ASTForAudioClassification(ASTConfig(**{**config, **overrides})).eval()


def tiny_conformer(**overrides) -> Wav2Vec2ConformerForSequenceClassification:
    """A 3-layer Wav2Vec2-Conformer classifier (relative positions unless overridden)."""
    config = {
        **WAV2VEC2_FAMILY,
        "position_embeddings_type": "relative",
        "conv_depthwise_kernel_size": 5,
    }
    config = Wav2Vec2ConformerConfig(**{**config, **overrides})
    return Wav2Vec2ConformerForSequenceClassification(config).eval()


def tiny_wavlm(**overrides) -> WavLMForSequenceClassification:
    """A 3-layer WavLM classifier; its gated relative position bias made non-trivial."""
    config = {**WAV2VEC2_FAMILY, "num_buckets": 16, "max_bucket_distance": 40}
    model = WavLMForSequenceClassification(WavLMConfig(**{**config, **overrides})).eval()
    with torch.no_grad():  # all-ones gates and zero-initialised biases would hide slicing errors
        for name, param in model.named_parameters():
            if "gru_rel_pos" in name or "rel_attn_embed" in name:
                param.normal_()
    return model


# name -> (builder, main input name, input shape for batch 2)
FAMILIES = {
    "wavlm": (tiny_wavlm, "input_values", (2, 1600)),
    "whisper": (tiny_whisper, "input_features", (2, 16, 100)),
    "wav2vec2": (tiny_wav2vec2, "input_values", (2, 1600)),
    "wav2vec2-layer-norm": (
        lambda: tiny_wav2vec2(feat_extract_norm="layer", do_stable_layer_norm=True),
        "input_values",
        (2, 1600),
    ),
    "wav2vec2-ctc": (tiny_wav2vec2_ctc, "input_values", (2, 1600)),
    "hubert": (tiny_hubert, "input_values", (2, 1600)),
    "data2vec-audio": (tiny_data2vec_audio, "input_values", (2, 1600)),
    "unispeech": (tiny_unispeech, "input_values", (2, 1600)),
    "unispeech-sat": (tiny_unispeech_sat, "input_values", (2, 1600)),
    "sew": (tiny_sew, "input_values", (2, 1600)),
    "ast": (tiny_ast, "input_values", (2, 64, 16)),
    "conformer-relative": (tiny_conformer, "input_values", (2, 1600)),
    "conformer-rotary": (
        lambda: tiny_conformer(position_embeddings_type="rotary"),
        "input_values",
        (2, 1600),
    ),
}
