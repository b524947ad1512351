"""Timbre augmentation on log-mel features while masks train: audio from another source (another
SoundFont, microphone, room) differs mostly in its spectral envelope, so the masks and head are
trained on random changes of it.

Each training example gets a random smooth EQ (a gain curve over the mel bins: a random tilt plus
a few random bumps, up to `eq_db` dB; on a log-mel spectrogram a filter is an offset per bin) and
torchaudio's SpecAugment masks (`FrequencyMasking`, `TimeMasking`). Whisper's features are
`(log10(mel) + 4) / 4`, so `g` dB of gain is an offset of `g / 40`; `db_per_unit` states that
scale for other feature extractors.
"""

from __future__ import annotations

import torch
import torchaudio


class SpectralAugment(torch.nn.Module):
    """Random EQ plus SpecAugment masks on a batch of log-mel features `(batch, mels, frames)`.

    Args:
        eq_db: Largest gain of the random EQ curve, in dB (0: none).
        freq_mask: Widest frequency mask, in mel bins (0: none).
        time_mask: Widest time mask, in frames (0: none).
        db_per_unit: dB per unit of the features (Whisper's normalised log10 mel: 40).
        seed: Seed of the augmentation's own generator (training stays reproducible).
    """

    def __init__(
        self,
        eq_db: float = 6.0,
        freq_mask: int = 8,
        time_mask: int = 10,
        db_per_unit: float = 40.0,
        seed: int = 0,
    ):
        super().__init__()
        self.eq_db, self.db_per_unit = eq_db, db_per_unit
        self.freq = (
            torchaudio.transforms.FrequencyMasking(freq_mask, iid_masks=True) if freq_mask else None
        )
        self.time = (
            torchaudio.transforms.TimeMasking(time_mask, iid_masks=True) if time_mask else None
        )
        self.generator = torch.Generator().manual_seed(seed)

    def eq_curves(self, batch: int, mels: int) -> torch.Tensor:
        """`(batch, mels, 1)` offsets: a random tilt and three random Gaussian bumps per example,
        scaled so that the largest gain is at most `eq_db` dB."""
        g = self.generator
        position = torch.linspace(-1, 1, mels)
        tilt = (torch.rand(batch, 1, generator=g) * 2 - 1) * position
        centres = torch.rand(batch, 3, 1, generator=g) * 2 - 1
        widths = 0.1 + 0.3 * torch.rand(batch, 3, 1, generator=g)
        heights = torch.rand(batch, 3, 1, generator=g) * 2 - 1
        bumps = (heights * torch.exp(-(((position - centres) / widths) ** 2))).sum(dim=1)
        curve = tilt + bumps
        curve = curve / curve.abs().amax(dim=1, keepdim=True).clamp(min=1e-6)
        gain = torch.rand(batch, 1, generator=g) * self.eq_db
        return (curve * gain / self.db_per_unit).unsqueeze(-1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Augmented copy of `features` `(batch, mels, frames)`.

        Args:
            features: Log-mel features.
        """
        out = features.clone()
        if self.eq_db:
            out = out + self.eq_curves(out.shape[0], out.shape[1]).to(out)
        # SpecAugment draws from torch's global generator: run it under our own seed's state.
        state = torch.random.get_rng_state()
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
        try:
            fill = float(features.amin())
            for mask in (self.freq, self.time):
                if mask is not None:
                    out = mask(out, mask_value=fill)  # the features' floor: silence
        finally:
            torch.random.set_rng_state(state)
        return out


class AugmentingCollator:
    """A collator that augments the `input_features` of the batches it makes (for training data
    only: evaluation batches must come from the plain collator).

    Args:
        collator: The plain collator.
        augment: A `SpectralAugment`.
        key: The feature key.
    """

    def __init__(self, collator, augment: SpectralAugment, key: str = "input_features"):
        self.collator, self.augment, self.key = collator, augment, key

    def __call__(self, examples):
        batch = self.collator(examples)
        batch[self.key] = self.augment(batch[self.key])
        return batch


__all__ = ["AugmentingCollator", "SpectralAugment"]
