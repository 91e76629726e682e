"""Figures as PNG files, each marked as numpyvae's, and never written over a file numpyvae did not draw.

Every PNG numpyvae draws carries a text chunk `Software: numpyvae`. A figure may replace a file
only if that file is such a PNG: `--out run/checkpoint.npz` or a user's own picture is refused
in one line and left alone.
"""
from __future__ import annotations

import os
import struct

from numpyvae.atomicfile import atomic_write

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MARK = "numpyvae"                 # the value of the Software text chunk
MAX_CHUNKS = 64                   # the mark comes in the first few chunks, before the image data


class NotOurs(FileExistsError):
    """A figure would replace a file numpyvae did not draw; the message says which."""


def is_ours(path):
    """True if `path` is a PNG file whose Software text chunk says numpyvae (it drew it)."""
    try:
        with open(path, "rb") as file:
            if file.read(len(SIGNATURE)) != SIGNATURE:
                return False
            for _ in range(MAX_CHUNKS):
                header = file.read(8)
                if len(header) < 8:
                    return False
                length, kind = struct.unpack(">I4s", header)
                if kind in (b"IDAT", b"IEND"):        # text chunks that matter come before the pixels
                    return False
                if kind == b"tEXt" and length < 1024:
                    keyword, _, value = file.read(length).partition(b"\x00")
                    if keyword == b"Software" and value == MARK.encode():
                        return True
                    file.seek(4, os.SEEK_CUR)         # the chunk's CRC
                else:
                    file.seek(length + 4, os.SEEK_CUR)
    except OSError:
        return False
    return False


def check_replaceable(path):
    """Raise NotOurs unless `path` is missing or a figure numpyvae drew."""
    if os.path.lexists(path) and not is_ours(path):
        raise NotOurs(f"{path} exists and is not a figure numpyvae drew; not replacing it "
                      "(move it away or write the figure elsewhere)")


def save_figure(figure, path, dpi):
    """Write a matplotlib Figure to `path` as a marked PNG, atomically; refuse to replace another file."""
    check_replaceable(path)
    with atomic_write(path) as file:
        figure.savefig(file, format="png", dpi=dpi, metadata={"Software": MARK})
    return path
