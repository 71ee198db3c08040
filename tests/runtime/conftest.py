"""Runtime tests share model builders in op_models.py; pytest's importlib mode does not put
this folder on sys.path, so add it here.

Under AddressSanitizer (LD_PRELOAD of libasan, see BENCHMARKS.md "Runtime"), sessions run
without onnxruntime's memory arena, so every tensor is its own allocation and ASan sees an
out-of-bounds access to an output as well as to an input.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True, scope="session")
def _no_arena_under_asan():
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):
        yield
        return
    import runtime.ort

    original = runtime.ort.session_options

    def session_options(threads=None, kernel=None):
        options = original(threads, kernel)
        options.enable_cpu_mem_arena = False
        return options

    runtime.ort.session_options = session_options
    yield
    runtime.ort.session_options = original
