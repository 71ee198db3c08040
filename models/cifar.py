"""CIFAR-100, python pickle format (Krizhevsky 2009), read through a restricted unpickler.

Folder `cifar-100-python/` with three pickles (protocol 2, written by Python 2):

    train, test: {b"data": uint8 ndarray (N, 3072), rows of R, G, B planes of 32x32,
                  b"fine_labels": [N ints 0..99], b"coarse_labels": [N ints 0..19],
                  b"filenames": [...], b"batch_label": bytes}
    meta:        {b"fine_label_names": [100 bytes], b"coarse_label_names": [20 bytes]}

Pickles can run arbitrary code, so the unpickler allows only the globals a numpy array
needs (`numpy.core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype`); anything else
is refused with the file name and the global it asked for. Files re-pickled by Python 3 at
protocol 2 spell bytes as `_codecs.encode(str, "latin1")`, which is allowed as a plain
str -> bytes conversion.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from models.data import DatasetFormatError, DatasetNotFoundError, data_root

_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3 (re-pickled files)
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
_FILES = ("train", "test", "meta")


class UnsafePickleError(DatasetFormatError, pickle.UnpicklingError):
    """The pickle asked for a global outside the allowed set."""


def _encode(text: str, encoding: str = "utf-8") -> bytes:
    # The one use of _codecs.encode in such pickles: str -> bytes, nothing else reachable.
    if not isinstance(text, str) or not isinstance(encoding, str):
        raise UnsafePickleError("_codecs.encode with non-string arguments")
    return text.encode(encoding)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            if module == "_codecs":
                return _encode
            # numpy 2 renamed numpy.core to numpy._core; both spellings appear in pickles.
            if name == "_reconstruct":
                return np.ndarray.__reduce__(np.zeros(0))[0]
            return getattr(np, name)
        raise UnsafePickleError(f"{self.path}: refusing global {module}.{name} (a CIFAR pickle "
                                "holds only dicts, lists, bytes and numpy arrays)")


def load_pickle(path: Path) -> dict[str, Any]:
    """One CIFAR pickle as a dict with str keys."""
    with open(path, "rb") as f:
        try:
            obj = _RestrictedUnpickler(f, path).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError) as exc:
            raise DatasetFormatError(f"{path}: not a readable CIFAR pickle ({exc})") from exc
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{path}: expected a dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def cifar100_dir(root: Path | None = None) -> Path:
    """`root` (or `data_root()`) / cifar-100-python, or `root` itself if it holds the pickles."""
    base = Path(root) if root is not None else data_root()
    for folder in (base, base / "cifar-100-python"):
        if all((folder / name).is_file() for name in _FILES):
            return folder
    raise DatasetNotFoundError(
        f"CIFAR-100 not found in {base / 'cifar-100-python'} (needs the python-format pickles "
        "train, test, meta from cifar-100-python.tar.gz; set AXMOE_DATA_DIR or --data-dir)")


def load_cifar100(split: str = "test", root: Path | None = None,
                  label: str = "fine") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images uint8 (N, 3, 32, 32), labels int64 (N,) and the class names.

    Args:
        split: "train" (50,000) or "test" (10,000).
        root: folder holding `cifar-100-python/` (default `data_root()`).
        label: "fine" (100 classes) or "coarse" (20 superclasses).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
    folder = cifar100_dir(root)
    batch = load_pickle(folder / split)
    meta = load_pickle(folder / "meta")
    data = batch.get("data")
    labels = batch.get(f"{label}_labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetFormatError(f"{folder / split}: 'data' must be a uint8 array (N, 3072)")
    if labels is None or len(labels) != len(data):
        raise DatasetFormatError(f"{folder / split}: '{label}_labels' missing or not one per image")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(f"{label}_label_names", [])]
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= max(len(names), 1)):
        raise DatasetFormatError(f"{folder / split}: labels outside 0..{len(names) - 1}")
    return data.reshape(-1, 3, 32, 32), labels, names
