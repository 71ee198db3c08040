"""The aarch64 build: `python -m runtime.tvm compile --target aarch64` cross-links with
aarch64-linux-gnu-g++, and the library runs under qemu-aarch64 with the aarch64 TVM runtime
(Debian arm64 python3.11 + PyPI's aarch64 wheels: scripts/aarch64_sysroot.sh) and gives the
x86 build's output bit for bit.

Needs aarch64-linux-gnu-g++ / qemu-aarch64 (Debian g++-aarch64-linux-gnu, qemu-user:
scripts/cross_toolchain.sh) and the sysroot (`make aarch64-sysroot`); `make test` sets up both.
Skipped without them, a failure when CI is set. Takes a few minutes: importing TVM under qemu alone is ~30 s."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from axmoe_testing import ROOT, require_tool, run_cli

CXX, QEMU = shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64")
SYSROOT = Path(os.environ.get("AXMOE_AARCH64_SYSROOT", ROOT / ".cache" / "aarch64-sysroot"))

require_tool(bool(CXX and QEMU), "aarch64-linux-gnu-g++ and qemu-aarch64", "scripts/cross_toolchain.sh")
require_tool((SYSROOT / ".complete").exists(), f"the aarch64 sysroot {SYSROOT}", "make aarch64-sysroot")


def test_aarch64_library_matches_x86_under_qemu(rewritten, images, tmp_path):
    import runtime.tvm

    model = rewritten("resnet20", "hard", "mul8s_1KVA", "lut")
    library = tmp_path / "resnet20-a72.so"
    run_cli("runtime.tvm", "compile", model, "--target", "aarch64", "--out", library, "--batch", 4, timeout=900)
    header = library.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    x = images[:4]
    np.save(tmp_path / "x.npy", x)
    env = {**os.environ, "PYTHONPATH": f"{SYSROOT / 'site'}:{ROOT}", "TVM_NUM_THREADS": "2"}
    env.pop("PYTHONHOME", None)
    proc = subprocess.run([QEMU, "-L", str(SYSROOT), str(SYSROOT / "usr/bin/python3.11"), "-m", "runtime.tvm", "run",
                           str(library), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    want = runtime.tvm.session(str(model)).run(x)  # the x86 build
    assert np.array_equal(np.load(tmp_path / "y.npy"), want)
