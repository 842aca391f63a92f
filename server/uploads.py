"""Photo upload checks: size, format, pixel count (before decoding) and a full decode."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

FORMATS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
"""Accepted Pillow formats -> file extension."""
MIN_SIDE = 16
"""Smallest accepted photo side in pixels."""


class UploadError(Exception):
    """A photo the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class PhotoInfo:
    """What the check learned about an accepted photo."""

    format: str
    """Pillow format name: PNG, JPEG or WEBP."""
    extension: str
    """File extension to store it under."""
    width: int
    height: int


def guard_pillow(max_pixels: int) -> None:
    """Set Pillow's process-wide decompression-bomb limit (call once, in the server process).

    Pillow raises above twice this limit and warns above it; the warning is silenced
    because ``check_photo`` refuses those images itself with a clearer message.
    """
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def check_photo(data: bytes, max_bytes: int, max_pixels: int) -> PhotoInfo:
    """Accept ``data`` as a photo or raise UploadError (413 too big, 415 not a usable image).

    The pixel count comes from the header and is checked before any pixel is decoded,
    so a small file that expands to gigabytes is refused without being expanded.
    """
    # 1. Bytes.
    if len(data) > max_bytes:
        raise UploadError(
            413, f"the photo is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB"
        )
    if not data:
        raise UploadError(415, "the photo part is empty; attach a PNG, JPEG or WebP file as the part 'photo'")
    # 2. Header: format and size. Pillow's own guard (an error above 2 * MAX_IMAGE_PIXELS,
    #    set by ``guard_pillow``) stays on as a second line behind the explicit check below.
    try:
        image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(
            413, f"the photo has more than {max_pixels / 1e6:.0f} megapixels; scale it down"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UploadError(
            415, "the upload is not an image Kiln can read; send a PNG, JPEG or WebP photo"
        ) from None
    with image:
        if image.format not in FORMATS:
            raise UploadError(415, f"{image.format} images are not accepted; send a PNG, JPEG or WebP photo")
        width, height = image.size
        if width * height > max_pixels:
            raise UploadError(
                413,
                f"the photo is {width} x {height} = {width * height / 1e6:.1f} megapixels; "
                f"the limit is {max_pixels / 1e6:.0f} megapixels: scale it down",
            )
        if min(width, height) < MIN_SIDE:
            raise UploadError(
                415, f"the photo is {width} x {height} pixels; send one at least {MIN_SIDE} px a side"
            )
        # 3. Decode every pixel, so a truncated or damaged file is refused now, not mid-job.
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise UploadError(413, f"the photo has more than {max_pixels / 1e6:.0f} megapixels") from None
        except (OSError, ValueError, SyntaxError, EOFError):
            raise UploadError(
                415, "the photo file is damaged or truncated; export it again and resend"
            ) from None
        return PhotoInfo(image.format, FORMATS[image.format], width, height)
