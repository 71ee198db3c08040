"""The aarch64 build: the kernel tester cross-compiled with aarch64-linux-gnu-g++ (NEON
kernels, with and without the dot-product extension) runs under qemu-aarch64 and every
variant matches the scalar reference; the op library itself cross-compiles, with both
dot-product variants of the decomposed-path kernel and the run-time choice between them.
The recipe (sources, flags) is runtime.bundle.toolchain's, the one the deployment bundles use;
the library running inside onnxruntime on aarch64 is tests/runtime/test_aarch64_ort.py.
Needs the Debian g++-aarch64-linux-gnu / qemu-user packages, which `make test` installs
(scripts/cross_toolchain.sh); skipped without them, a failure when CI is set."""

import shutil
import subprocess

import pytest

from axmoe_testing import require_tool
from runtime.bundle import toolchain

CXX, QEMU = shutil.which(toolchain.CROSS_CXX), shutil.which("qemu-aarch64")

require_tool(bool(CXX and QEMU), "aarch64-linux-gnu-g++ and qemu-aarch64", "scripts/cross_toolchain.sh")


@pytest.mark.parametrize("march", ["armv8-a", "armv8.2-a+dotprod"])
def test_neon_kernels_match_scalar_under_qemu(march):
    tester = toolchain.build_kernel_tester(march)
    result = subprocess.run([QEMU, "-cpu", "max", str(tester)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "neon (" in result.stdout and "all variants match the scalar reference" in result.stdout


def test_op_library_cross_compiles():
    try:
        toolchain.ort_headers()
    except toolchain.ToolchainError:
        require_tool(False, "onnxruntime headers", "make ort-headers")
    data = toolchain.build_op_library("aarch64").read_bytes()
    assert data[:4] == b"\x7fELF" and int.from_bytes(data[18:20], "little") == 183  # EM_AARCH64
    for symbol in (b"RegisterCustomOps", b"axmoe_neon_dot_extension", b"dot_gemm_i32__neon_u4x2__dotprod",
                   b"dot_gemm_i32__neon_u4x2__base"):
        assert symbol in data, symbol
