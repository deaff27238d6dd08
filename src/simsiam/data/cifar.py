"""Reading CIFAR's python-pickle batches without trusting pickle.

The batches (``cifar-10-batches-py/data_batch_1`` ...) are dataset files the
user placed, not checkpoints, but pickle can run arbitrary code. The
unpickler below resolves only the few globals these files need (numpy array
reconstruction and bytes decoding), so a tampered file fails to load instead
of executing anything.
"""

from __future__ import annotations

import codecs
import pickle

import numpy as np

_ARRAY = np.empty(0)
# Fetch numpy's reconstruction helpers from live objects so the mapping works on numpy 1 and 2.
_RECONSTRUCT = _ARRAY.__reduce__()[0]
_FROMBUFFER = _ARRAY.__reduce_ex__(5)[0]
_SCALAR = np.uint8(0).__reduce__()[0]

_SAFE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # Python 3 pickles bytes this way under protocol 2
}
for _core in ("numpy.core", "numpy._core"):
    _SAFE_GLOBALS[(f"{_core}.multiarray", "_reconstruct")] = _RECONSTRUCT
    _SAFE_GLOBALS[(f"{_core}.multiarray", "scalar")] = _SCALAR
    _SAFE_GLOBALS[(f"{_core}.numeric", "_frombuffer")] = _FROMBUFFER

CIFAR_PIXELS = 3 * 32 * 32


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a CIFAR batch") from None


def read_cifar_batch(path: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 (N, 3, 32, 32), labels int64 (N,)) from one CIFAR batch file.

    Raises ValueError naming the file when it is not a well-formed batch.
    """
    try:
        with open(path, "rb") as fh:
            # encoding="bytes": the files were written by Python 2, so keys are bytes.
            batch = _DataOnlyUnpickler(fh, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"CIFAR batch {path!r} could not be read: {exc}") from exc
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise ValueError(f"CIFAR batch {path!r} lacks the keys b'data' and {label_key!r}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_PIXELS:
        raise ValueError(f"CIFAR batch {path!r}: data must be uint8 (N, {CIFAR_PIXELS}), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"CIFAR batch {path!r}: {labels.size} labels for {data.shape[0]} images")
    # Each row is the red plane, then green, then blue, each 32x32 row-major: i.e. CHW.
    return data.reshape(-1, 3, 32, 32), labels
