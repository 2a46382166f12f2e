"""Reading one picture as 8-bit RGB; resizing and normalisation belong to each image encoder."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from extract.corpus import ImageItem, MediaError

# Transparent pixels are composited onto white, not black: the test images (masked objects, like the
# demo's emoji artwork) are objects on white, and a transparent background must read as that white.
BACKGROUND = (255, 255, 255)


def read_image(item: ImageItem) -> Image.Image:
    """The picture of ``item`` as a fully decoded RGB ``PIL.Image``.

    Palette, grey, CMYK and 16-bit images are converted to RGB; images with transparency (RGBA, LA,
    palette with a transparent colour) are composited onto :data:`BACKGROUND`. EXIF orientation is
    deliberately not applied: COCO's masks and the authors' pipeline use the stored pixel grid.
    Raises :class:`MediaError` for a missing, empty, unrecognised, truncated or zero-size file.
    """
    path = os.fspath(item.path)
    if not os.path.isfile(path):
        raise MediaError(item.id, path, "file not found", "restore the file or correct its path in images.csv")
    if os.path.getsize(path) == 0:
        raise MediaError(item.id, path, "empty file (0 bytes)", "replace the file")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not inside an encoder batch
            if image.width == 0 or image.height == 0:
                raise MediaError(item.id, path, f"zero-size image ({image.width}x{image.height})",
                                 "replace the file or drop the row")
            return _to_rgb(image)
    except MediaError:
        raise
    except UnidentifiedImageError as e:
        raise MediaError(item.id, path, "not an image Pillow can read (corrupt, zero-size or unknown format)",
                         "replace the file with a PNG or JPEG") from e
    except (OSError, ValueError, SyntaxError) as e:  # Pillow reports truncation and bad chunks as these
        raise MediaError(item.id, path, f"corrupt or truncated image: {e}", "replace the file with a complete copy") from e


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I;16"):
        # 16-bit grey: Pillow's own conversion to RGB clips at 255 instead of scaling.
        grey = (np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")
