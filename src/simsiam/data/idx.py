"""Reader for the IDX format used by (Fashion-)MNIST.

Layout: two zero bytes, a dtype code, the number of dimensions ``n``, then
``n`` big-endian uint32 sizes, then the values in C order (big-endian for
multi-byte types). Files may be gzip-compressed; we sniff the gzip magic
rather than trusting the file name.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

# dtype code -> numpy dtype of the stored (big-endian) values.
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: str) -> bytes:
    """Return the (decompressed) contents of ``path``."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as exc:  # truncated or damaged gzip stream
        raise ValueError(f"IDX file {path!r} is a damaged gzip stream: {exc}") from exc


def _parse_header(path: str, data: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """Validate the header; return (dtype, shape, offset of the first value)."""
    if len(data) < 4:
        raise ValueError(f"IDX file {path!r} is truncated: {len(data)} bytes, too short for a header")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise ValueError(f"{path!r} is not an IDX file: it must start with two zero bytes, got {data[:2]!r}")
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise ValueError(f"IDX file {path!r} has unknown dtype code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise ValueError(f"IDX file {path!r} declares 0 dimensions")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ValueError(f"IDX file {path!r} is truncated inside its header ({ndim} dimensions declared)")
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    return IDX_DTYPES[code], shape, offset


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (plain or gzipped) into a native-byte-order numpy array.

    Raises ``ValueError`` with the path in the message when the header is not
    IDX, the dtype code is unknown, or the payload is shorter or longer than
    the header's dimensions require (a truncated download is the usual cause).
    The returned array is writable and owns its memory.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    dtype, shape, offset = _parse_header(path, data)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(data) - offset
    if found != expected:
        problem = "truncated" if found < expected else "longer than its header says"
        raise ValueError(
            f"IDX file {path!r} is {problem}: shape {shape} of {dtype} needs {expected} bytes of data, found {found}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    # astype copies: the result is writable (torch.from_numpy warns otherwise) and native-endian.
    return values.astype(dtype.newbyteorder("="))
