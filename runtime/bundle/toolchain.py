"""Builds of the native parts of a bundle for one target: the op library and the C++ runner.

Targets: `host` (this machine, x86-64 or aarch64) and `aarch64` (64-bit Arm Linux, e.g. a
Raspberry Pi 4/5 with a 64-bit OS), cross-compiled with Debian's aarch64-linux-gnu-g++.

    op library (aarch64)  register.cc c_api.cc cpu/*.cc core/*.cc kernels/*/{scalar,neon}.cc
                          at -march=armv8-a, plus kernels/dot_gemm/neon.cc a second time at
                          -march=armv8.2-a+dotprod, both renamed, and csrc/neon_dot_dispatch.cc
                          choosing between them from AT_HWCAP at run time
    op library (host)     the package's own CMake build (`runtime.ort.library_path()`)
    runner                csrc/runner.cc linked to onnxruntime's libonnxruntime.so.1 of the
                          target: the host's from the installed onnxruntime wheel, aarch64's
                          from PyPI's manylinux aarch64 wheel in the sysroot
                          (scripts/aarch64_sysroot.sh); rpath $ORIGIN, so the bundle's copy is used

Objects are cached under build/<target>/ and rebuilt when older than their source or any
header of the library. The kernel tester of tests/runtime/test_aarch64_qemu.py is built here too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "runtime" / "ort" / "csrc"
HERE = Path(__file__).resolve().parent / "csrc"
BUILD = ROOT / "build"
TARGETS = ("host", "aarch64")
CROSS_CXX = "aarch64-linux-gnu-g++"
#: onnxruntime's shared library under the name its SONAME gives, as bundles ship it.
ORT_SONAME = "libonnxruntime.so.1"
#: Kernel sources per target (globs under runtime/ort/csrc), without the op-library files.
KERNELS = {"aarch64": ["core/*.cc", "kernels/*/scalar.cc", "kernels/*/neon.cc"]}
LIBRARY_SOURCES = ["register.cc", "c_api.cc", "cpu/*.cc"]
#: The dot-product copy of the decomposed-path kernel (see csrc/neon_dot_dispatch.cc).
NEON_DOT = "kernels/dot_gemm/neon.cc"
NEON_DOT_FN = "dot_gemm_i32__neon_u4x2"


class ToolchainError(RuntimeError):
    """A missing compiler, header or library, said in one line with the command that fixes it."""


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise ToolchainError(f"unknown target {target!r} (one of {', '.join(TARGETS)})")
    return target


def sysroot() -> Path:
    """The arm64 sysroot (python3.11, libc, PyPI aarch64 wheels): $AXMOE_AARCH64_SYSROOT or .cache/."""
    return Path(os.environ.get("AXMOE_AARCH64_SYSROOT", ROOT / ".cache" / "aarch64-sysroot"))


def compiler(target: str) -> str:
    name = "g++" if check_target(target) == "host" else CROSS_CXX
    found = shutil.which(name)
    if not found:
        fix = "scripts/cross_toolchain.sh (make arm-tools)" if target == "aarch64" else "apt-get install g++"
        raise ToolchainError(f"no {name} for target {target}: run {fix}")
    return found


def ort_headers() -> Path:
    """onnxruntime's C/C++ API headers: $ONNXRUNTIME_INCLUDE_DIR, Debian's, or `make ort-headers`'."""
    candidates = [Path(p) for p in [os.environ.get("ONNXRUNTIME_INCLUDE_DIR")] if p]
    candidates += [Path("/usr/include/onnxruntime"), ROOT / ".cache/onnxruntime-dev/root/usr/include/onnxruntime"]
    for path in candidates:
        if (path / "onnxruntime_cxx_api.h").is_file():
            return path
    raise ToolchainError("onnxruntime headers not found: run `make ort-headers` or set ONNXRUNTIME_INCLUDE_DIR")


def onnxruntime_library(target: str) -> Path:
    """libonnxruntime.so.<version> of the target's onnxruntime wheel (the runner links it)."""
    if check_target(target) == "host":
        import onnxruntime

        capi = Path(onnxruntime.__file__).parent / "capi"
        fix = "pip install onnxruntime"
    else:
        capi = sysroot() / "site" / "onnxruntime" / "capi"
        fix = "make aarch64-sysroot (scripts/aarch64_sysroot.sh puts PyPI's aarch64 onnxruntime wheel there)"
    found = sorted(capi.glob("libonnxruntime.so.*"))
    if not found:
        raise ToolchainError(f"no libonnxruntime.so for target {target} in {capi}: run {fix}")
    return found[-1]


def sources(*patterns: str, base: Path = CSRC) -> list[Path]:
    return sorted(p for pattern in patterns for p in base.glob(pattern))


def _stale(output: Path, inputs: list[Path]) -> bool:
    deps = inputs + list(CSRC.rglob("*.h")) + list(CSRC.rglob("*.inc")) + list(HERE.glob("*.h"))
    return not output.exists() or output.stat().st_mtime < max(d.stat().st_mtime for d in deps)


def run_compiler(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ToolchainError(f"{Path(command[0]).name} failed: {result.stderr.strip()[-3000:]}")


def compile_program(target: str, output: Path, inputs: list[Path], flags: list[str], opt: str = "-O2",
                    libs: tuple[str, ...] = ()) -> Path:
    """One compiler call from sources to a linked `output` (libs after the sources), skipped
    when it is up to date."""
    if _stale(output, inputs):
        output.parent.mkdir(parents=True, exist_ok=True)
        run_compiler([compiler(target), opt, "-std=c++17", "-Wall", "-Wextra", f"-I{CSRC}", *flags,
                      *map(str, inputs), *libs, "-o", str(output)])
    return output


def _objects(target: str, folder: Path, units: list[tuple[Path, str, list[str]]], flags: list[str]) -> list[Path]:
    """Compile (source, object name, extra flags) units to folder/*.o, two at a time."""
    cxx = compiler(target)
    folder.mkdir(parents=True, exist_ok=True)

    def one(unit):
        source, name, extra = unit
        obj = folder / f"{name}.o"
        if _stale(obj, [source]):
            run_compiler([cxx, "-std=c++17", "-Wall", "-Wextra", f"-I{CSRC}", *flags, *extra,
                          "-c", str(source), "-o", str(obj)])
        return obj

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, units))


@contextlib.contextmanager
def _locked(target: str):
    """One build per target folder at a time (pytest-xdist workers share build/)."""
    folder = BUILD / target
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_op_library(target: str) -> Path:
    """libaxmoe_ort.so for the target (see the module docstring for what goes in)."""
    if check_target(target) == "host":
        from runtime.ort import library_path

        return library_path()
    with _locked(target):
        return _build_cross_library(target)


def _build_cross_library(target: str) -> Path:
    flags = ["-O2", "-fPIC", "-fvisibility=hidden", "-DORT_API_MANUAL_INIT", f"-I{ort_headers()}"]
    units = []
    for source in sources(*LIBRARY_SOURCES, *KERNELS[target]):
        name = str(source.relative_to(CSRC)).replace("/", "_")[:-3]
        extra = ["-march=armv8-a"]
        if str(source.relative_to(CSRC)) == NEON_DOT:
            extra.append(f"-D{NEON_DOT_FN}={NEON_DOT_FN}__base")
            dotprod = ["-march=armv8.2-a+dotprod", f"-D{NEON_DOT_FN}={NEON_DOT_FN}__dotprod"]
            units.append((source, name + "__dotprod", dotprod))
        units.append((source, name, extra))
    units.append((HERE / "neon_dot_dispatch.cc", "neon_dot_dispatch", ["-march=armv8-a"]))
    folder = BUILD / target / "op_library"
    objects = _objects(target, folder, units, flags)
    library = folder / "libaxmoe_ort.so"
    if not library.exists() or library.stat().st_mtime < max(o.stat().st_mtime for o in objects):
        run_compiler([compiler(target), "-shared", *map(str, objects), "-o", str(library)])
    return library


def build_runner(target: str) -> Path:
    """The C++ runner `axmoe_run` for the target, linked to its onnxruntime (rpath $ORIGIN)."""
    ort = onnxruntime_library(target)
    with _locked(target):
        return _build_runner(target, ort)


def _build_runner(target: str, ort: Path) -> Path:
    folder = BUILD / check_target(target) / "runner"
    link = folder / ORT_SONAME  # the linker records the SONAME; the file it reads may have any name
    folder.mkdir(parents=True, exist_ok=True)
    if not link.exists() or link.stat().st_mtime < ort.stat().st_mtime:
        shutil.copyfile(ort, link)
    march = ["-march=armv8-a"] if target == "aarch64" else []
    return compile_program(target, folder / "axmoe_run", [HERE / "runner.cc"],
                           [*march, f"-I{ort_headers()}"],
                           libs=(str(link), "-ldl", "-Wl,-rpath,$ORIGIN", "-Wl,--allow-shlib-undefined"))


def build_kernel_tester(march: str) -> Path:
    """The C++ kernel tester (tests/runtime/cpp) for aarch64 at one -march, static (runs under qemu)."""
    tester = ROOT / "tests" / "runtime" / "cpp" / "kernel_tester.cc"
    with _locked("aarch64"):
        return compile_program("aarch64", BUILD / "aarch64" / f"kernel_tester-{march}",
                               sources(*KERNELS["aarch64"]) + [tester], ["-static", f"-march={march}"], opt="-O1")
