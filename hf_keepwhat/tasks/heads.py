"""A task head for any audio backbone: time-averaged features of the backbone's last hidden
state into a linear layer or the paper's MLP (one hidden layer of 1024 with ReLU).

For backbones that have no `...ForAudioClassification` class (embedding models such as CLAP's
audio tower), or to use the paper's head instead of a model's own. The backbone stays a
transformers model inside the module, so `get_mask_model` finds it (`ScopedLayout`) and prunes it
exactly; the pruned module saves with `save_pruned_module`.
"""

from __future__ import annotations

from torch import nn
from torch.nn import functional as F
from transformers.modeling_outputs import SequenceClassifierOutput

HEADS = ("linear", "mlp")


def audio_backbone(model: nn.Module) -> nn.Module:
    """The part of a loaded model that encodes audio: the encoder of an encoder-decoder
    (Whisper), the audio tower of an audio-text model (CLAP), else the model itself.

    Args:
        model: What `AutoModel.from_pretrained` returned.
    """
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return model.get_encoder()
    return getattr(model, "audio_model", model)


class PooledAudioClassifier(nn.Module):
    """Backbone -> mean over time of its last hidden state -> `classifier`.

    Args:
        backbone: An audio model whose output has `last_hidden_state` (B, time, width).
        num_labels: Classes (or tags).
        head: `"linear"`, or `"mlp"`: a hidden layer of `hidden_size` with ReLU (the paper's).
        hidden_size: Width of the MLP's hidden layer.
        multi_label: Tagging: binary cross-entropy on each label instead of cross-entropy.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_labels: int,
        head: str = "linear",
        hidden_size: int = 1024,
        multi_label: bool = False,
    ):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"Unknown head {head!r}; choose from {HEADS}.")
        self.backbone, self.multi_label = backbone, multi_label
        width = _width(backbone)
        if head == "linear":
            self.classifier = nn.Linear(width, num_labels)
        else:
            self.classifier = nn.Sequential(
                nn.Linear(width, hidden_size), nn.ReLU(), nn.Linear(hidden_size, num_labels)
            )

    def forward(self, input_values=None, input_features=None, attention_mask=None, labels=None):
        inputs = {"input_values": input_values, "input_features": input_features}
        inputs = {k: v for k, v in inputs.items() if v is not None}
        if attention_mask is not None and "input_values" in inputs:
            inputs["attention_mask"] = attention_mask
        hidden = self.backbone(**inputs).last_hidden_state
        # (batch, time, width); a spectrogram-shaped output (batch, width, freq, time) too.
        pooled = hidden.mean(1) if hidden.dim() == 3 else hidden.flatten(2).mean(2)
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            if self.multi_label:
                loss = F.binary_cross_entropy_with_logits(logits, labels.float())
            else:
                loss = F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _width(backbone: nn.Module) -> int:
    config = backbone.config
    for name in ("d_model", "hidden_size"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    raise ValueError(f"Cannot tell the output width of {type(backbone).__name__} from its config.")


def pooled_classifier(model_path: str, num_labels: int, head: str, multi_label: bool = False):
    """`PooledAudioClassifier` around the audio backbone of `AutoModel.from_pretrained`.

    Args:
        model_path: Hub id or folder of the base model.
        num_labels: Classes (or tags).
        head: `"linear"` or `"mlp"`.
        multi_label: Tagging (binary cross-entropy).
    """
    from transformers import AutoModel

    backbone = audio_backbone(AutoModel.from_pretrained(model_path))
    return PooledAudioClassifier(backbone, num_labels, head, multi_label=multi_label)
