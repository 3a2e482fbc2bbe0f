"""torchvision's evaluation transform for `predict --resize N --crop M`.

`transforms.Resize(N)` then `CenterCrop(M)` on a PIL image, as torchvision's ImageNet
weights expect (N = 256, M = 224 for most): the short side is resized to N with PIL's
bilinear filter (which antialiases, as torchvision does for PIL images), the long side to
`int(N * long / short)`, then the centre M x M is cut, offsets rounded as torchvision
rounds them. Pixels stay 0..255; the mean/std normalisation is the network's own
(`scale 1/255 -> normalize mean=(0.485, 0.456, 0.406) std=(0.229, 0.224, 0.225)`) or the
imported checkpoint's (`import-weights --normalize imagenet`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ArgumentError, DataError


def resize_crop(image: object, resize: int | None, crop: int | None) -> object:
    """A PIL image resized (short side to `resize`) and centre-cropped to `crop` x `crop`."""
    from PIL import Image

    img = image
    if resize is not None:
        w, h = img.size  # type: ignore[attr-defined]
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(resize * long / short)
        size = (resize, new_long) if w <= h else (new_long, resize)
        if size != (w, h):
            img = img.resize(size, Image.BILINEAR)  # type: ignore[attr-defined]
    if crop is not None:
        w, h = img.size  # type: ignore[attr-defined]
        if crop > w or crop > h:
            raise DataError(
                f"cannot centre-crop {crop}x{crop} from an image of {w}x{h}",
                hints=[f"resize first: `--resize {crop * 256 // 224}` (short side), or crop less"],
            )
        top = round((h - crop) / 2.0)
        left = round((w - crop) / 2.0)
        img = img.crop((left, top, left + crop, top + crop))  # type: ignore[attr-defined]
    return img


def eval_transform(path: str | Path, resize: int | None, crop: int | None, *, channels: int = 3) -> np.ndarray:
    """The image at `path` as `(H, W, D)` uint8 after the transform (RGB, or L for 1 channel)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            out = resize_crop(im, resize, crop)
            arr = np.asarray(out, np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"cannot read the image `{path}`: {e}") from None
    return arr[..., None] if arr.ndim == 2 else arr


def transformed_files(
    paths: Sequence[str], resize: int | None, crop: int | None, *, channels: int, size: tuple[int, ...] | None
) -> tuple[tempfile.TemporaryDirectory[str], list[str]]:
    """Each image transformed and written as a lossless PNG in a temporary folder (the
    caller keeps the folder alive while reading); `size` is the network's (W, H) to check."""
    for name, v in (("--resize", resize), ("--crop", crop)):
        if v is not None and v < 1:
            raise ArgumentError(f"`{name}` must be a positive number of pixels, got {v}")
    from PIL import Image

    tmp = tempfile.TemporaryDirectory(prefix="cnndsl-predict-")
    out = []
    for i, p in enumerate(paths):
        arr = eval_transform(p, resize, crop, channels=channels)
        got = (arr.shape[1], arr.shape[0])
        if size is not None and len(size) == 2 and got != tuple(size):
            tmp.cleanup()
            raise DataError(
                f"`{p}` is {got[0]}x{got[1]} after --resize/--crop, but the network takes {size[0]}x{size[1]}",
                hints=[f"use `--crop {size[0]}`" if size[0] == size[1] else "crop to the network's input size"],
            )
        dst = os.path.join(tmp.name, f"{i:05d}.png")
        Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(dst)
        out.append(dst)
    return tmp, out
