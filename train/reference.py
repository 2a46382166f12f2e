"""Reference mode (`train-heads --reference`): the training step computed the authors' way, to check the fast one.

The fast step (`train.loop.episode_embeddings`) makes three choices that are exact for the forward pass but
not, a priori, for training: each distinct item of a step is embedded once (so an item drawn several times
shares one dropout mask and its gradient is summed through one graph), the transformer block is computed for
the CLS position only (`train.model.cls_block`, whose dropout sites differ from the full layer's), and the
matmuls run in the machine's fast precision. Reference mode undoes all three: every sampled occurrence of an
episode (60 anchors × 12 audios and 12 images) is embedded separately, with its own dropout masks, in fp32,
through the real `nn.TransformerEncoderLayer` forward over the full sequence, reading its CLS output — what
the authors' code does. The weights are the same parameters (`PoolingHead.layer` is that layer), so a
reference run's checkpoints load like any other. `bench/reference_vs_fast.py` compares the two over seeds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from train.model import PoolingHead, TwoTower

REFERENCE_PRECISION = "fp32"


def full_layer_forward(head: PoolingHead, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    """Unit embeddings (B, E) of `head` with the full encoder layer run over [CLS; proj(x)] (CLS row kept)."""
    h, pad = head.tokens(x, pad)
    cls = head.layer(h, src_key_padding_mask=pad)[:, 0]
    return F.normalize(head.out(head.norm(cls)).float(), dim=-1)


def occurrence_embeddings(model: TwoTower, data, episodes, bucket: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, E) audio and image embeddings of a batch, every occurrence embedded on its own (no sharing).

    Audio occurrences are still embedded in length-sorted buckets: with the key-padding mask, padding does
    not change a sequence's output, and every occurrence gets its own dropout masks wherever it sits.
    """
    audio_items = torch.from_numpy(episodes.audio).reshape(-1)
    image_items = torch.from_numpy(episodes.image).reshape(-1)
    order = torch.argsort(data.audio.lengths[audio_items], stable=True)
    sorted_items = audio_items[order]
    audio = torch.cat([full_layer_forward(model.audio, *data.audio.gather(sorted_items[s: s + bucket]))
                       for s in range(0, len(sorted_items), bucket)])[torch.argsort(order)]
    image = torch.cat([full_layer_forward(model.image, data.image.gather(image_items[s: s + bucket])[0], None)
                       for s in range(0, len(image_items), bucket)])
    return audio.view(*episodes.audio.shape, -1), image.view(*episodes.image.shape, -1)
