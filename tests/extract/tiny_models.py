"""Tiny random-weight WavLM, ResNet and ViT models saved with ``save_pretrained``.

Tests load them through ``load_encoder(folder)``, the same path a user's local model folder takes, so the real
transformers loading code runs without a download. Each folder is ~200 kB and loads in well under a second.
"""
from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_wavlm(folder: Path, seed: int = 0) -> Path:
    """WavLM with hidden 32, 2 layers, the real conv front end (400-sample receptive field, 320 hop),
    group-norm feature extractor (as base-plus) and a preprocessor with ``do_normalize=False``."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    torch.manual_seed(seed)
    config = WavLMConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        num_buckets=32,
        max_bucket_distance=64,
        feat_extract_norm="group",
        do_stable_layer_norm=False,
    )
    WavLMModel(config).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=False, return_attention_mask=True
    ).save_pretrained(folder)
    return folder


def save_tiny_resnet(folder: Path, seed: int = 0) -> Path:
    """Bottleneck ResNet with 4 stages (hidden 8/16/32/64): 256 input → 8×8 map × 64 channels."""
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(seed)
    config = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], layer_type="bottleneck"
    )
    ResNetModel(config).eval().save_pretrained(folder)
    return folder


def save_tiny_vit(folder: Path, seed: int = 0) -> Path:
    """ViT with hidden 32, 2 layers, patch 16, trained size 224, saved without its pooler."""
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=16, image_size=224
    )
    ViTModel(config, add_pooling_layer=False).eval().save_pretrained(folder)
    return folder
