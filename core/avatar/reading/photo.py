"""Loading an uploaded face photo safely: size limits, format checks, EXIF rotation, alpha, downscale."""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_BYTES = 20 * 1024 * 1024
"""Largest photo file accepted (docs/API.md: 20 MB)."""
MAX_PIXELS = 40_000_000
"""Largest photo accepted, in pixels, checked from the header before decoding (docs/API.md: 40 MP)."""
WORK_SIDE = 2048
"""Photos are downscaled so their longer side is at most this before any analysis."""
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP")
"""Pillow decoders tried (the JPEG one also opens MPO, the JPEG variant many phone cameras write)."""


_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis")
"""ISO-BMFF brands of HEIC/HEIF and AVIF stills (bytes 8-12 after the ``ftyp`` box tag)."""


class PhotoError(ValueError):
    """A photo that cannot be used; the message says what to do instead.

    ``reason`` is a stable machine code for servers: ``"empty"``, ``"too_large"``,
    ``"not_image"``, ``"unsupported_format"``, ``"damaged"``, ``"no_face"``,
    ``"face_too_small"``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Photo:
    """A decoded photo ready for face analysis.

    Attributes:
        rgb: (H, W, 3) uint8 pixels, upright (EXIF orientation applied), downscaled so the
            longer side is at most ``WORK_SIDE``; transparent areas composited over mid grey.
        valid: (H, W) bool, False where the original was (mostly) transparent, so colour
            statistics can skip pixels that were never part of the photo.
        greyscale: True when the photo carries no colour (a grey mode, or RGB with equal
            channels); colour attributes cannot be read from it.
        original_size: (width, height) of the upright photo before downscaling.
        scale: ``rgb`` width / original width (1.0 when not downscaled).
        notes: what loading changed, for the artist ("rotated by EXIF orientation 6", ...).
    """

    rgb: np.ndarray
    valid: np.ndarray
    greyscale: bool
    original_size: tuple[int, int]
    scale: float
    notes: tuple[str, ...] = ()


def _read_source(source: bytes | bytearray | memoryview | str | Path) -> bytes:
    """The photo's bytes, refusing empty or oversized files before reading them whole."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise PhotoError(f"photo file {str(path)!r} does not exist; check the path", "not_image")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise PhotoError(
                f"the photo is {size / 2**20:.1f} MB; the limit is {MAX_BYTES // 2**20} MB, "
                "so save it as a smaller JPEG",
                "too_large",
            )
        data = path.read_bytes()
    if len(data) == 0:
        raise PhotoError("the photo is empty (0 bytes); upload a PNG, JPEG or WebP image", "empty")
    if len(data) > MAX_BYTES:
        raise PhotoError(
            f"the photo is {len(data) / 2**20:.1f} MB; the limit is {MAX_BYTES // 2**20} MB, "
            "so save it as a smaller JPEG",
            "too_large",
        )
    return data


def _open(data: bytes):
    """Open the header lazily (no pixel decoding) and check format and pixel count."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(ACCEPTED_FORMATS))
    except UnidentifiedImageError:
        # Name the format when Pillow knows it, so the artist knows what to convert.
        try:
            with Image.open(io.BytesIO(data)) as other:
                fmt = other.format
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            fmt = None
        if not fmt and data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
            # Phones save HEIC/AVIF by default and Pillow cannot open them: name the format.
            fmt = "AVIF" if data[8:12] in (b"avif", b"avis") else "HEIC"
        if fmt:
            raise PhotoError(
                f"{fmt} photos are not accepted; save it as PNG, JPEG or WebP", "unsupported_format"
            ) from None
        raise PhotoError("the file is not an image; upload a PNG, JPEG or WebP photo", "not_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow refuses before we see the size; its message carries the pixel count.
        m = re.search(r"\((\d+) pixels\)", str(e))
        declared = f"{int(m.group(1)) / 1e6:.0f} megapixels" if m else "too many pixels"
        raise PhotoError(
            f"the photo declares {declared}, too many to decode safely; the limit is "
            f"{MAX_PIXELS // 1_000_000} megapixels, so downscale it first",
            "too_large",
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise PhotoError(f"the photo's header is damaged ({e}); re-save or re-export it", "damaged") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise PhotoError(f"the photo declares an empty size {w} x {h}; re-save it", "damaged")
    if w * h > MAX_PIXELS:
        raise PhotoError(
            f"the photo is {w} x {h} ({w * h / 1e6:.0f} megapixels); the limit is "
            f"{MAX_PIXELS // 1_000_000} megapixels, so downscale it first",
            "too_large",
        )
    return img


def load_photo(source: bytes | bytearray | memoryview | str | Path, work_side: int = WORK_SIDE) -> Photo:
    """Decode a photo from bytes or a file path into an upright, bounded-size RGB array.

    Steps: 1. read bytes with a size cap; 2. parse the header and refuse bad formats and pixel
    counts before decoding; 3. decode (at reduced scale for big JPEGs) and fail cleanly on
    truncation; 4. apply EXIF orientation; 5. split alpha into a validity mask and composite
    over grey; 6. downscale to ``work_side``.

    Raises:
        PhotoError: for empty, oversized, non-image, unsupported or damaged input. Nothing is
            written anywhere in any case.
    """
    from PIL import Image, ImageOps

    # 1-2. Bytes and header.
    data = _read_source(source)
    img = _open(data)
    notes: list[str] = []
    header_size = img.size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # 3. Decode; JPEG can decode directly at 1/2, 1/4, 1/8 scale, which saves time and memory.
            if img.format in ("JPEG", "MPO") and max(img.size) > 2 * work_side:
                img.draft("RGB", (work_side, work_side))
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PhotoError(
            f"the photo is too large to decode safely ({e}); downscale it first", "too_large"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise PhotoError(
            f"the photo file is damaged or incomplete ({e}); upload the complete file or re-save it",
            "damaged",
        ) from None
    # 4. Upright. A damaged EXIF block only costs the orientation, never the photo.
    try:
        orientation = int(img.getexif().get(0x0112, 1) or 1)
        if orientation != 1:
            img = ImageOps.exif_transpose(img)
            notes.append(f"rotated by EXIF orientation {orientation}")
    except (OSError, SyntaxError, ValueError, TypeError, KeyError, struct.error):
        orientation = 1
        notes.append("EXIF data unreadable; orientation not applied")
    # Orientations 5-8 swap width and height.
    swapped = orientation in (5, 6, 7, 8)
    original_size = (header_size[1], header_size[0]) if swapped else header_size

    # 5. Colour mode, alpha and validity mask.
    arr, alpha, greyscale = _to_rgb(img)
    if alpha is not None:
        valid = alpha >= 128
        if not valid.any():
            raise PhotoError("the photo is fully transparent; upload a photo with a visible face", "no_face")
        a = (alpha.astype(np.float32) / 255.0)[..., None]
        arr = (arr.astype(np.float32) * a + 128.0 * (1 - a) + 0.5).astype(np.uint8)
        if not valid.all():
            notes.append("transparent areas ignored")
    else:
        valid = np.ones(arr.shape[:2], bool)
    if greyscale:
        notes.append("greyscale photo: colours are not read")

    # 6. Downscale with area averaging (PIL reduce + Lanczos) so small details survive.
    h, w = arr.shape[:2]
    if max(h, w) > work_side:
        scale = work_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        arr = np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))
        valid = np.asarray(Image.fromarray(valid).resize(size, Image.Resampling.NEAREST))
        notes.append(f"downscaled from {w} x {h} to {size[0]} x {size[1]}")
    # Overall scale from the original, including JPEG draft decoding.
    scale = arr.shape[1] / original_size[0]
    return Photo(
        rgb=np.ascontiguousarray(arr),
        valid=np.ascontiguousarray(valid),
        greyscale=greyscale,
        original_size=original_size,
        scale=scale,
        notes=tuple(notes),
    )


def _to_rgb(img) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(H, W, 3) uint8 RGB, optional (H, W) uint8 alpha, and whether the image has no colour."""
    mode = img.mode
    alpha = None
    if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit and float greys: scale by the data's range into 8 bits.
        g = np.asarray(img, np.float64)
        top = 65535.0 if g.max() > 255 else 255.0
        grey = np.clip(g / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2), None, True
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(img.convert("RGBA"))
        alpha = rgba[..., 3].copy()
        rgb = rgba[..., :3].copy()
        greyscale = mode in ("LA", "La")
    elif mode in ("L", "1"):
        grey = np.asarray(img.convert("L"))
        rgb = np.repeat(grey[..., None], 3, axis=2)
        greyscale = True
    else:
        rgb = np.asarray(img.convert("RGB")).copy()
        greyscale = False
    if not greyscale:
        # RGB files holding a grey photo (scans, "black and white" exports).
        sample = rgb[:: max(1, rgb.shape[0] // 256), :: max(1, rgb.shape[1] // 256)].astype(np.int16)
        spread = np.abs(sample - sample.mean(axis=2, keepdims=True)).max(axis=2)
        greyscale = bool(np.percentile(spread, 99) <= 4)
    return rgb, alpha, greyscale
