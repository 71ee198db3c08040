"""onnxruntime integration: the axmoe custom-op library and sessions that load it.

The library (`libaxmoe_ort.so`) is built by the package build (CMake, see CMakeLists.txt)
and installed next to this file; `library_path()` finds it, `session()` registers it.

Ops: axmoe.ApproxMul, axmoe.ApproxConvInteger, axmoe.ApproxMatMulInteger (schemas in
`modelfile.ops`). Threads: the ops run their tiles on onnxruntime's intra-op thread pool, so
`session(model, threads=N)` (intra_op_num_threads) sets how many cores one op uses, batch 1
included. Kernel choice, `session(model, kernel=KernelConfig(isa=..., path=...))`:

    isa  = auto | scalar | avx2 | avx512 | neon   ISA of both paths (auto: best this CPU has)
    path = auto | lut | decomposed                decomposed: exact int8 dot products on
                                                  masked operands, when the LUT has that
                                                  structure (auto picks it then)

It reaches the kernels as the session config entries axmoe.kernel / axmoe.path, which the
library reads when it is registered. Without a `kernel` argument the user's environment
decides (`KernelConfig.from_environment`, the one place it is read): AXMOE_KERNEL = isa,
AXMOE_PATH = path, unset meaning auto.

`kernel_variants()` lists the ISAs usable here; `describe_lut(lut)` says which path a LUT takes.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

LIBRARY_NAME = "libaxmoe_ort.so"
#: GEMM paths of the integer ops, the values of `KernelConfig.path`.
PATHS = ("auto", "lut", "decomposed")
#: Session config entries the library reads when it is registered (csrc/core/kernel_select.h).
KERNEL_CONFIG_KEY = "axmoe.kernel"
PATH_CONFIG_KEY = "axmoe.path"
#: The user's override of an unset kernel choice, read only by `KernelConfig.from_environment`.
KERNEL_ENV = "AXMOE_KERNEL"
PATH_ENV = "AXMOE_PATH"


class LibraryNotFoundError(RuntimeError):
    pass


def library_path() -> Path:
    """Path of the built custom-op library.

    Looked up, in order: `$AXMOE_ORT_LIBRARY`, this package's folder, and the files of the
    installed `axmoe` distribution (an editable install keeps the built library in
    site-packages while the Python sources stay in the checkout).
    """
    env = os.environ.get("AXMOE_ORT_LIBRARY")
    if env:
        path = Path(env)
        if not path.is_file():
            raise LibraryNotFoundError(f"AXMOE_ORT_LIBRARY={env} is not a file")
        return path
    local = Path(__file__).with_name(LIBRARY_NAME)
    if local.is_file():
        return local
    try:
        files = metadata.distribution("axmoe").files or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == LIBRARY_NAME:
            path = Path(file.locate())
            if path.is_file():
                return path
    raise LibraryNotFoundError(
        f"{LIBRARY_NAME} not found: install the package (`make install` or `pip install -e .`), "
        "or point AXMOE_ORT_LIBRARY at a build of it")


def _check_kernel_choice(isa: str, path: str, isa_name: str, path_name: str) -> None:
    if path not in PATHS:
        raise ValueError(f"{path_name}={path} is not one of {', '.join(PATHS)}")
    if isa != "auto" and isa not in kernel_variants():
        raise ValueError(f"{isa_name}={isa} is not available on this CPU/build "
                         f"(available: {', '.join(['auto', *kernel_variants()])})")


@dataclass(frozen=True)
class KernelConfig:
    """Which kernels the axmoe integer ops of a session run (checked against this CPU)."""

    isa: str = "auto"   # "auto" (the best here) or one of kernel_variants(): ISA of both paths
    path: str = "auto"  # one of PATHS; "auto": decomposed when the LUT allows it, else lut

    def __post_init__(self):
        _check_kernel_choice(self.isa, self.path, "isa", "path")

    @classmethod
    def from_environment(cls) -> KernelConfig:
        """The user's choice from AXMOE_KERNEL (isa) and AXMOE_PATH (path); unset or empty: auto."""
        isa = os.environ.get(KERNEL_ENV) or "auto"
        path = os.environ.get(PATH_ENV) or "auto"
        _check_kernel_choice(isa, path, KERNEL_ENV, PATH_ENV)
        return cls(isa, path)


def session_options(threads: int | None = None, kernel: KernelConfig | None = None):
    """onnxruntime SessionOptions with the axmoe library registered, its kernels chosen by
    `kernel` (default: `KernelConfig.from_environment()`)."""
    import onnxruntime as ort

    if kernel is None:
        kernel = KernelConfig.from_environment()
    options = ort.SessionOptions()
    # The library reads the choice when it is registered, so the entries come first.
    options.add_session_config_entry(KERNEL_CONFIG_KEY, kernel.isa)
    options.add_session_config_entry(PATH_CONFIG_KEY, kernel.path)
    options.register_custom_ops_library(str(library_path()))
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def session(model, threads: int | None = None, kernel: KernelConfig | None = None):
    """An onnxruntime CPU InferenceSession for `model` (path or bytes) with the axmoe ops,
    running the kernels of `kernel` (default: `KernelConfig.from_environment()`)."""
    import onnxruntime as ort

    if isinstance(model, (str, os.PathLike)):
        model = str(model)
    return ort.InferenceSession(model, sess_options=session_options(threads, kernel),
                                providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=None)
def _native(path: str) -> ctypes.CDLL:
    lib = ctypes.CDLL(path)
    lib.axmoe_kernel_variants.restype = ctypes.c_char_p
    lib.axmoe_kernel_names.restype = ctypes.c_char_p
    lib.axmoe_kernel_names.argtypes = [ctypes.c_char_p]
    lib.axmoe_describe_lut.restype = ctypes.c_int
    lib.axmoe_describe_lut.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    return lib


def kernel_variants() -> list[str]:
    """ISAs of the op kernels usable on this CPU, best first (values of `KernelConfig.isa`)."""
    return _native(str(library_path())).axmoe_kernel_variants().decode().split(",")


def kernel_names(isa: str) -> tuple[str, str]:
    """(general LUT kernel, decomposed-path kernel) names of one ISA, e.g. for reports."""
    names = _native(str(library_path())).axmoe_kernel_names(isa.encode()).decode()
    if not names:
        raise ValueError(f"kernel ISA {isa!r} is not available here (available: {', '.join(kernel_variants())})")
    lut, dot = names.split(",")
    return lut, dot


def describe_lut(lut) -> str:
    """Which path the ops take for this LUT, as the library decides it from the table:
    'decomposed: <terms>' or 'lut: <why not>'."""
    table = np.ascontiguousarray(lut, dtype=np.int32)
    if table.shape != (256, 256):
        raise ValueError(f"LUT must have shape (256, 256), got {table.shape}")
    lib = _native(str(library_path()))
    size = lib.axmoe_describe_lut(table.ctypes.data, None, 0) + 1
    buf = ctypes.create_string_buffer(size)
    lib.axmoe_describe_lut(table.ctypes.data, buf, size)
    return buf.value.decode()
