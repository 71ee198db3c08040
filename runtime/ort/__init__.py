"""onnxruntime integration: the axmoe custom-op library and sessions that load it.

The library (`libaxmoe_ort.so`) is built by the package build (CMake, see CMakeLists.txt)
and installed next to this file; `library_path()` finds it, `session()` registers it.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

LIBRARY_NAME = "libaxmoe_ort.so"
DOMAIN = "axmoe"


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


def session_options(threads: int | None = None):
    """onnxruntime SessionOptions with the axmoe library registered."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.register_custom_ops_library(str(library_path()))
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return options


def session(model, threads: int | None = None):
    """An onnxruntime CPU InferenceSession for `model` (path or bytes) with the axmoe ops."""
    import onnxruntime as ort

    if isinstance(model, (str, os.PathLike)):
        model = str(model)
    return ort.InferenceSession(model, sess_options=session_options(threads),
                                providers=["CPUExecutionProvider"])
