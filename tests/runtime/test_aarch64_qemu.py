"""The aarch64 build: the kernel tester cross-compiled with aarch64-linux-gnu-g++ (NEON
kernels, with and without the dot-product extension) runs under qemu-aarch64 and every
variant matches the scalar reference; the op library itself cross-compiles.
Needs the Debian g++-aarch64-linux-gnu / qemu-user packages, which `make test` installs
(scripts/cross_toolchain.sh); skipped without them, a failure when CI is set."""

import shutil
import subprocess
from pathlib import Path

import pytest

from axmoe_testing import require_tool

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "runtime" / "ort" / "csrc"
BUILD = ROOT / "build" / "aarch64"
CXX, QEMU = shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64")
ORT_HEADERS = next((p for p in (Path("/usr/include/onnxruntime"),
                                 ROOT / ".cache/onnxruntime-dev/root/usr/include/onnxruntime")
                    if (p / "onnxruntime_c_api.h").is_file()), None)

require_tool(bool(CXX and QEMU), "aarch64-linux-gnu-g++ and qemu-aarch64", "scripts/cross_toolchain.sh")


def sources(*patterns) -> list[str]:
    return sorted(str(p) for pattern in patterns for p in CSRC.glob(pattern))


def build(output: Path, args: list[str], inputs: list[str], opt: str = "-O1") -> Path:
    """Compile unless the output is newer than every input."""
    deps = [Path(i) for i in inputs] + list(CSRC.rglob("*.h")) + list(CSRC.rglob("*.inc"))
    if not output.exists() or output.stat().st_mtime < max(d.stat().st_mtime for d in deps):
        output.parent.mkdir(parents=True, exist_ok=True)
        result = subprocess.run([CXX, opt, "-std=c++17", "-Wall", "-Wextra", f"-I{CSRC}", *args, *inputs,
                                 "-o", str(output)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-4000:]
    return output


KERNELS = ["core/*.cc", "kernels/*/scalar.cc", "kernels/*/neon.cc"]


@pytest.mark.parametrize("march", ["armv8-a", "armv8.2-a+dotprod"])
def test_neon_kernels_match_scalar_under_qemu(march):
    tester = build(BUILD / f"kernel_tester-{march}", ["-static", f"-march={march}"],
                   sources(*KERNELS) + [str(ROOT / "tests/runtime/cpp/kernel_tester.cc")])
    result = subprocess.run([QEMU, "-cpu", "max", str(tester)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "neon (" in result.stdout and "all variants match the scalar reference" in result.stdout


def test_op_library_cross_compiles():
    require_tool(ORT_HEADERS is not None, "onnxruntime headers", "make ort-headers")
    library = build(BUILD / "libaxmoe_ort.so",
                    ["-shared", "-fPIC", "-fvisibility=hidden", "-DORT_API_MANUAL_INIT", f"-I{ORT_HEADERS}"],
                    sources("register.cc", "c_api.cc", "cpu/*.cc", *KERNELS), opt="-O0")
    assert b"RegisterCustomOps" in library.read_bytes()
