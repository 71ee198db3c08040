"""The C++ kernel tester (tests/runtime/cpp/kernel_tester.cc): every ISA variant this CPU has
against the scalar reference over tile edge cases, and the tiled driver against a naive conv.
Built with CMake into build/kernel-tester (incremental after the first run)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from axmoe_testing import require_tool

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "kernel-tester"


@pytest.fixture(scope="module")
def tester() -> Path:
    require_tool(bool(shutil.which("cmake") and (shutil.which("c++") or shutil.which("g++"))),
                 "cmake and a C++ compiler", "apt-get install cmake g++")
    configure = ["cmake", "-S", str(ROOT), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release", "-DAXMOE_BUILD_TESTER=ON"]
    build = ["cmake", "--build", str(BUILD), "--target", "axmoe_kernel_tester", "-j", str(os.cpu_count() or 2)]
    for cmd in (configure, build):
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:
            require_tool("onnxruntime headers not found" not in result.stdout + result.stderr,
                         "onnxruntime headers", "make ort-headers")
            pytest.fail(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return BUILD / "axmoe_kernel_tester"


def test_every_variant_matches_the_scalar_reference(tester):
    result = subprocess.run([str(tester)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "all variants match the scalar reference" in result.stdout
