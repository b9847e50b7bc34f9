"""Image files in, model pixels out: decoding with Pillow, guarded, into the pixels a CLIP
model was trained on.

What the emoji CLIP was trained on (:func:`llmos.data.emoji_pairs.to_pixels`): RGBA images
composited on white into RGB, resized with antialiasing (bilinear, PyTorch's) to the model's
square ``image_size``, as uint8. Decoding does the same from any image: Pillow reads it, any
mode becomes RGBA (a palette's transparency and a grey image's alpha included), and the
composite and the resize are ``to_pixels`` itself, so a prepared emoji's PNG decodes to
exactly the pixels its style's array gives in training and evaluation. Two steps only touch
images unlike the emoji: a non-square image is padded to a square with transparent (then
white) margins, centred, rather than stretched; an image of more than
:data:`SHRINK_ABOVE` pixels on its longer side is first shrunk by an integer factor in Pillow
to about twice the model's size (a box filter on premultiplied alpha; a JPEG decoded at a
reduced scale), so a photo costs its decode, not a float copy of all its pixels, and a long
thin image is not padded to a huge square. A photo's EXIF orientation is applied.

Guards, checked before the pixels are decoded: the bytes (``max_bytes``, from a file's size
before it is read), the format (PNG, JPEG, WebP, GIF, BMP; Pillow's other formats are
refused, so their parsers never see user bytes) and the pixel count from the header
(``max_pixels``): a small file that claims 50,000 x 50,000 pixels (a decompression bomb) is
refused unread. A GIF or an animated WebP gives its first frame. Any failure is an
:class:`ImageError` naming the input and what was expected.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from llmos.data.emoji_pairs import to_pixels
from llmos.errors import LlmosError

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
_NAMES = "PNG, JPEG, WebP, GIF or BMP"

# 20 MiB of file and 40 megapixels: a 48-megapixel phone photo is refused by the pixel limit,
# a 12-megapixel one (36 MB as RGBA while it is shrunk) passes; pass larger limits if needed.
MAX_IMAGE_BYTES = 20 * 2**20
MAX_IMAGE_PIXELS = 40_000_000
# Images up to this side go to the resize exactly as training's were (the emoji are 64 px);
# a larger one is first shrunk by an integer factor to about twice the model's size.
SHRINK_ABOVE = 512

ImageInput = bytes | bytearray | str | os.PathLike[str] | Image.Image


class ImageError(LlmosError, ValueError):
    """An image input that cannot be used: missing, not an image of a supported format, too
    many bytes or pixels, truncated or corrupt. The message names the input."""


class ImageTooLarge(ImageError):
    """An image over the byte or pixel limit (the server answers it 413, other errors 422)."""


def _read(data: Any, what: str, max_bytes: int) -> tuple[bytes | None, Any]:
    """``(bytes, None)`` for bytes or a path, ``(None, image)`` for a Pillow image."""
    if isinstance(data, Image.Image):
        return None, data
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
    elif isinstance(data, str | os.PathLike):
        path = Path(data)
        if not path.is_file():
            raise ImageError(f"{what}: no such file")
        n = path.stat().st_size
        if n > max_bytes:
            raise ImageTooLarge(f"{what}: {n:,} bytes, more than the limit of {max_bytes:,}")
        raw = path.read_bytes()
    else:
        raise ImageError(
            f"{what}: expected image bytes, a file path or a PIL image, got {type(data).__name__}"
        )
    if len(raw) > max_bytes:
        raise ImageTooLarge(f"{what}: {len(raw):,} bytes, more than the limit of {max_bytes:,}")
    if not raw:
        raise ImageError(f"{what}: empty (expected a {_NAMES} image)")
    return raw, None


def _to_rgba(im: Image.Image) -> Image.Image:
    """Any mode -> RGBA. 16-bit and float grey (``I;16``, ``I``, ``F``, as 16-bit grey PNGs
    open) is scaled to 8 bits first; Pillow's conversion would clip it."""
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.size and a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return im.convert("RGBA")


def _square(im: Image.Image) -> Image.Image:
    """A non-square RGBA image centred on a transparent square (white once composited)."""
    w, h = im.size
    if w == h:
        return im
    side = max(w, h)
    canvas = Image.new("RGBA", (side, side), (255, 255, 255, 0))
    canvas.paste(im, ((side - w) // 2, (side - h) // 2))
    return canvas


def decode_image(
    data: ImageInput,
    *,
    size: int,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
    name: str | None = None,
) -> torch.Tensor:
    """One image -> (3, size, size) uint8 RGB, as a CLIP model reads it (module docstring).

    Args:
        data: the file's bytes, its path, or a Pillow image.
        size: the model's ``image_size``.
        max_bytes: refuse a larger file (checked before it is read).
        max_pixels: refuse an image of more pixels (checked from its header, before decoding).
        name: what to call the input in errors (default: its path, else ``image``).

    Raises:
        ImageError: no such file, not a PNG/JPEG/WebP/GIF/BMP image, too many bytes or
            pixels (with the limits), truncated or corrupt.
    """
    what = name or (str(data) if isinstance(data, str | os.PathLike) else "image")
    raw, im = _read(data, what, max_bytes)
    try:
        with warnings.catch_warnings():
            # The pixel limit below is the guard; Pillow's own (89 MP) would only warn.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if raw is not None:
                im = Image.open(io.BytesIO(raw), formats=FORMATS)
            w, h = im.size
            if w * h > max_pixels:
                raise ImageTooLarge(
                    f"{what}: {w} x {h} = {w * h:,} pixels, more than the limit of {max_pixels:,}"
                )
            if getattr(im, "format", None) == "JPEG" and min(w, h) > SHRINK_ABOVE:
                im.draft("RGB", (2 * size, 2 * size))  # libjpeg decodes at 1/2, 1/4 or 1/8
            im.load()
            im = ImageOps.exif_transpose(im)
            im = _to_rgba(im)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(
            f"{what}: too many pixels, more than the limit of {max_pixels:,} (Pillow: {e})"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{what}: not an image (expected a {_NAMES} file)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(f"{what}: a corrupt or truncated image ({e})") from None
    # Shrink a large image in Pillow first (premultiplied), by its longer side: the square it
    # is padded to below is that side squared (a 16,000,000 x 1 PNG of a few KB passes the
    # pixel limit, and would be padded to 2.5e14 pixels).
    if max(im.size) > SHRINK_ABOVE:
        im = im.reduce(max(1, max(im.size) // (2 * size)))
    rgba = np.array(_square(im), dtype=np.uint8)  # (H, W, 4), a writable copy for torch
    return to_pixels(rgba[None], size)[0]  # (3, size, size): on white, antialiased resize


def decode_images(
    items: Sequence[ImageInput],
    *,
    size: int,
    max_bytes: int = MAX_IMAGE_BYTES,
    max_pixels: int = MAX_IMAGE_PIXELS,
    field: str = "images",
    start: int = 0,
) -> torch.Tensor:
    """Several images -> (N, 3, size, size) uint8; errors name ``field[start + i]`` (and the
    path), ``start`` being where this batch begins in the caller's list.

    Raises:
        ImageError: see :func:`decode_image`.
    """
    if isinstance(items, bytes | str | os.PathLike):
        raise ImageError(f"{field}: expected a list of images, got one {type(items).__name__}")
    out = []
    for i, item in enumerate(items):
        what = f"{field}[{start + i}]"
        if isinstance(item, str | os.PathLike):
            what += f" ({item})"
        out.append(
            decode_image(item, size=size, max_bytes=max_bytes, max_pixels=max_pixels, name=what)
        )
    if not out:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return torch.stack(out)


def image_files(items: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files from command-line items: a file as is, a directory's image files (by suffix:
    :data:`SUFFIXES`, sorted, not recursive), a glob pattern's matches (sorted).

    Raises:
        ImageError: an item that matches nothing, or no file at all.
    """
    out: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
            if not found:
                raise ImageError(f"{path}: no image files ({', '.join(SUFFIXES)}) in it")
        elif any(c in text for c in "*?["):
            anchor = Path(path.anchor) if path.is_absolute() else Path()
            pattern = str(path.relative_to(anchor)) if path.is_absolute() else text
            found = sorted(p for p in anchor.glob(pattern) if p.is_file())
            if not found:
                raise ImageError(f"{text}: no file matches")
        elif path.is_file():
            found = [path]
        else:
            raise ImageError(f"{path}: no such file")
        out += found
    if not out:
        raise ImageError("no image files given")
    return out
