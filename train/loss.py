"""The paper's two-way episode loss, in the style of open_clip's `ClipLoss`.

An episode row holds an anchor audio and its positive image at column 0 and negatives after it. Audio→image:
the anchor against [i⁺, i⁻…]; image→audio: i⁺ against [a⁺, a⁻…]; the target is column 0 in both. The loss
is the cross-entropy averaged over the 2B rows (the mean of the two directions' means).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def episode_logits(audio: torch.Tensor, image: torch.Tensor, scale: torch.Tensor,
                   image_valid: torch.Tensor | None = None,
                   audio_valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (B, K) of each anchor against its images and of each positive image against its audios.

    audio, image: (B, K, E) unit embeddings, column 0 = the anchor / the positive. `image_valid` and
    `audio_valid` (B, K) mark usable columns; False masks one out (only shared negatives can share the
    anchor's concept).
    """
    to_image = scale * torch.einsum("be,bke->bk", audio[:, 0], image)
    to_audio = scale * torch.einsum("be,bke->bk", image[:, 0], audio)
    if image_valid is not None:
        to_image = to_image.masked_fill(~image_valid, float("-inf"))
    if audio_valid is not None:
        to_audio = to_audio.masked_fill(~audio_valid, float("-inf"))
    return to_image, to_audio


def episode_loss(to_image: torch.Tensor, to_audio: torch.Tensor) -> torch.Tensor:
    logits = torch.cat([to_image, to_audio]).float()
    return F.cross_entropy(logits, logits.new_zeros(len(logits), dtype=torch.long))


def correct_choices(to_image: torch.Tensor) -> torch.Tensor:
    """Audio→image episodes won: the positive image scores strictly above every negative (ties count as lost)."""
    return to_image[:, 0] > to_image[:, 1:].max(dim=1).values


def familiar_test_accuracy(to_image: torch.Tensor) -> torch.Tensor:
    """Per episode, the share of its negatives that the positive image beats (ties count as lost).

    This is the paper's familiar test (an audio query, its image and one image of another familiar concept)
    asked once for every negative of a validation episode: the expected two-image accuracy, with less
    variance than drawing one negative.
    """
    return (to_image[:, :1] > to_image[:, 1:]).float().mean(dim=1)
