"""What a TVM import of an axmoe model is configured with, and the check that TVM is there.

    config = LoweringConfig(kernel="lut")      # frozen; given to `frontend.from_onnx`'s importer,
                                               # which hands it to the converters that use it
    require_tvm()                              # MissingTVMError (one line) without apache-tvm

Neither imports TVM: the CLI's parser, the runner's cache key and `eval` read them on machines
that may not have it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

#: product forms of the approximate ops: "auto" = the exact integer decomposition where the
#: multiplier's LUT has one (dot products), else table lookups; "lut" = table lookups everywhere
KERNELS = ("auto", "lut")
EXTRA = "pip install 'axmoe[tvm]'"


class MissingTVMError(ImportError):
    """apache-tvm is not installed: the TVM backend is the optional extra `axmoe[tvm]`."""


@dataclass(frozen=True)
class LoweringConfig:
    """How the converters lower the axmoe ops (one import, read-only)."""

    kernel: str = "auto"  # product form of ApproxConvInteger / ApproxMatMulInteger, one of KERNELS

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be {' or '.join(map(repr, KERNELS))}, got {self.kernel!r}")


def require_tvm() -> None:
    """MissingTVMError unless `import tvm` finds apache-tvm (imports it: call it where TVM is
    about to be used anyway)."""
    try:
        importlib.import_module("tvm")
    except ModuleNotFoundError as exc:
        if exc.name != "tvm":
            raise  # TVM is there but a dependency of its own is not: its message names which
        raise MissingTVMError(f"the TVM backend needs apache-tvm: {EXTRA}") from None
