"""The C++ kernel tester (tests/runtime/cpp/kernel_tester.cc): every ISA variant this CPU has
against the scalar reference over tile edge cases, and the tiled driver against a naive conv.
Built with CMake into build/kernel-tester (incremental after the first run)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "kernel-tester"


@pytest.fixture(scope="module")
def tester() -> Path:
    if not shutil.which("cmake") or not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("cmake and a C++ compiler are needed to build the kernel tester")
    configure = ["cmake", "-S", str(ROOT), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release", "-DAXMOE_BUILD_TESTER=ON"]
    for cmd in (configure, ["cmake", "--build", str(BUILD), "--target", "axmoe_kernel_tester", "-j", str(os.cpu_count() or 2)]):
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode:
            if "onnxruntime headers not found" in result.stdout + result.stderr:
                pytest.skip("onnxruntime headers not found (make ort-headers)")
            pytest.fail(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return BUILD / "axmoe_kernel_tester"


def test_every_variant_matches_the_scalar_reference(tester):
    result = subprocess.run([str(tester)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "all variants match the scalar reference" in result.stdout
