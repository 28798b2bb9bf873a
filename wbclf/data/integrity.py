"""Cheap checks that find unusable image files without decoding them.

Indexing 90k files must take seconds, so this reads only a file's first and last bytes: empty
files, non-images and JPEG/PNG files cut short are found here. Anything else that fails to
decode is found (and skipped, and reported) when the image cache is built.
"""

from __future__ import annotations

import os

_HEAD = 16
_TAIL = 64


def sniff_format(head: bytes) -> str | None:
    """The image format named by a file's magic bytes (or None)."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def check_image_file(path: str | os.PathLike) -> str | None:
    """Return why ``path`` cannot be used as an image, or None when it looks fine."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as fh:
            head = fh.read(_HEAD)
            fh.seek(max(0, size - _TAIL))
            tail = fh.read(_TAIL)
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    kind = sniff_format(head)
    if kind is None:
        return "not an image (unknown file format)"
    if kind == "gif":
        return "GIF is not supported (use jpg, png, bmp, webp or tif)"
    # Encoders may pad after the end marker, so look for it near the end, not at the last byte.
    if kind == "jpeg" and b"\xff\xd9" not in tail:
        return "truncated JPEG (no end-of-image marker)"
    if kind == "png" and b"IEND" not in tail:
        return "truncated PNG (no IEND chunk)"
    return None
