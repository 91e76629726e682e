"""IDX, the file format of MNIST and Fashion-MNIST: read and write, raw or gzipped.

An IDX file is a header, then the array's elements in C order, big-endian:

    byte 0-1   zero
    byte 2     element type (see TYPES)
    byte 3     number of dimensions, ndim
    then       ndim big-endian uint32 sizes, outermost first
    then       prod(sizes) elements

`read_idx` trusts nothing in a file: whatever is wrong with it raises IDXError, whose
one-line message names the file and the fault. Sizes from the header are checked against
the bytes actually present before any memory is set aside for them.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zlib

import numpy as np

from numpyvae.atomicfile import atomic_write

# type byte -> element dtype as stored on disk (big-endian; one-byte types have no order)
TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# native dtype -> type byte, for writing
_CODES = {dtype.newbyteorder("="): code for code, dtype in TYPES.items()}

GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot expand data by more than about 1032:1, so a gzip file of n bytes holds
# at most 1032 * n; a header that promises more is lying, and we say so before allocating.
GZIP_MAX_RATIO = 1032
MAX_BYTES = 2**31  # refuse more data than this by default: 45x Fashion-MNIST, far below RAM
_CHUNK = 1 << 20   # read 1 MiB at a time, so a short or corrupt stream is noticed early


class IDXError(ValueError):
    """A file is not a well-formed IDX file; the message names the file and what is wrong."""


class ChecksumError(IDXError):
    """A well-formed IDX file whose contents are not the ones expected."""


def read_idx(path, *, sha256=None, max_bytes=MAX_BYTES):
    """Read an IDX file, raw or gzipped (told apart by content, not by name).

    Args:
        path:      file to read.
        sha256:    if given, the hex SHA-256 that the decompressed file must have;
                   a mismatch raises ChecksumError.
        max_bytes: refuse files whose header declares more data than this.
    Returns:
        NumPy array of the declared shape and type, in native byte order.
    Raises:
        IDXError for anything wrong with the file (OSError if it cannot be opened).
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        file_size = os.fstat(file.fileno()).st_size
        if file_size == 0:
            raise IDXError(f"{path}: empty file")
        compressed = file.read(2) == GZIP_MAGIC
        file.seek(0)
        if not compressed:
            return _parse(path, file, file_size, compressed, sha256, max_bytes)
        try:
            with gzip.GzipFile(fileobj=file) as stream:
                return _parse(path, stream, file_size, compressed, sha256, max_bytes)
        except (OSError, EOFError, zlib.error) as error:  # gzip reports damage as any of these
            raise IDXError(f"{path}: corrupt gzip data ({error})") from error


def _parse(path, stream, file_size, compressed, sha256, max_bytes):
    """Header, size checks, data, checksum: the body of read_idx for an open stream."""
    magic = _read_exact(path, stream, 4, "the 4-byte magic number")
    zero, type_code, ndim = struct.unpack(">HBB", magic)
    if zero != 0:
        raise IDXError(f"{path}: bad magic number {magic.hex()} (an IDX file starts with 00 00)")
    if type_code not in TYPES:
        raise IDXError(f"{path}: unknown element type 0x{type_code:02x} "
                       f"(known: {', '.join(f'0x{c:02x}' for c in TYPES)})")
    dims_bytes = _read_exact(path, stream, 4 * ndim, f"the {ndim} dimension sizes")
    shape = struct.unpack(f">{ndim}I", dims_bytes)
    dtype = TYPES[type_code]
    declared = math.prod(shape) * dtype.itemsize  # Python int: cannot overflow
    header_size = 4 + 4 * ndim
    promise = f"header declares shape {shape} of {dtype.name}, {declared} bytes of data"

    # Every size check happens here, before np.empty, so a lying header costs nothing.
    if not compressed and declared != file_size - header_size:
        raise IDXError(f"{path}: {promise}, but the file holds {file_size - header_size}")
    if compressed and declared > GZIP_MAX_RATIO * file_size:
        raise IDXError(f"{path}: {promise}, but a {file_size}-byte gzip file "
                       f"cannot hold more than {GZIP_MAX_RATIO * file_size}")
    if declared > max_bytes:
        raise IDXError(f"{path}: {promise}, over the limit of {max_bytes} (raise max_bytes to read it)")
    # a zero dimension makes the data empty, but the other sizes must still make sense: NumPy
    # cannot even build an empty array of shape (0, 2**31, 2**31, 2**31)
    extent = math.prod(d for d in shape if d) * dtype.itemsize
    if extent > max_bytes:
        raise IDXError(f"{path}: {promise}, but its non-zero dimensions alone span {extent} bytes, "
                       f"over the limit of {max_bytes}")
    try:
        data = np.empty(declared, dtype=np.uint8)  # (bytes,) pages are committed only as filled
    except MemoryError:
        raise IDXError(f"{path}: {promise}, more than this machine can allocate") from None

    view = memoryview(data)
    filled = 0
    while filled < declared:
        count = stream.readinto(view[filled:filled + _CHUNK])
        if not count:
            raise IDXError(f"{path}: {promise}, but the data ends after {filled}")
        filled += count
    if stream.read(1):
        raise IDXError(f"{path}: {promise}, but more data follows")

    if sha256 is not None:
        digest = hashlib.sha256(magic + dims_bytes)
        digest.update(view)
        if digest.hexdigest() != sha256.lower():
            raise ChecksumError(f"{path}: SHA-256 of the decompressed file is {digest.hexdigest()}, "
                                f"expected {sha256.lower()}")

    array = data.view(dtype).reshape(shape)
    if not dtype.isnative:
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))  # in place: no second copy
    return array


def _read_exact(path, stream, size, what):
    """Read exactly `size` header bytes or raise IDXError saying which part was cut off."""
    data = stream.read(size)
    if len(data) != size:
        raise IDXError(f"{path}: file ends inside the header ({len(data)} of {size} bytes of {what})")
    return data


def write_idx(path, array):
    """Write `array` as an IDX file, gzipped if `path` ends in ".gz"; atomic (temp file + rename).

    The array's dtype must be one IDX can hold: uint8, int8, int16, int32, float32 or float64
    (no silent casting). Gzip output is reproducible: no timestamp, no file name inside.
    """
    path = os.fspath(path)
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise IDXError(f"{path}: cannot write dtype {array.dtype} as IDX "
                       f"(IDX holds {', '.join(d.name for d in _CODES)})")
    if any(size > 0xFFFFFFFF for size in array.shape):
        raise IDXError(f"{path}: cannot write shape {array.shape} as IDX (each size must fit in uint32)")
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    data = np.ascontiguousarray(array, dtype=TYPES[code])  # big-endian copy, C order
    with atomic_write(path) as file:
        if path.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=file, compresslevel=6, mtime=0) as stream:
                stream.write(header)
                stream.write(data.tobytes())
        else:
            file.write(header)
            file.write(data.tobytes())
