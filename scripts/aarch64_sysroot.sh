#!/usr/bin/env bash
# Assemble an aarch64 (arm64) sysroot that runs the TVM runtime under qemu-aarch64, without
# root and without touching the system's apt configuration:
#
#   scripts/aarch64_sysroot.sh [DEST]          (default: .cache/aarch64-sysroot)
#
#   DEST/usr/bin/python3.11, DEST/lib, DEST/usr/lib   Debian 12 (bookworm) arm64 python3.11,
#                                                     libc, libstdc++ and what they depend on
#   DEST/site                                         PyPI's manylinux aarch64 wheels of
#                                                     apache-tvm, apache-tvm-ffi, numpy, ml_dtypes,
#                                                     onnxruntime (the versions installed on this
#                                                     machine; onnxruntime/capi/libonnxruntime.so.*
#                                                     is what runtime.bundle links its runner to)
#
# Then, from the repository root (this is what tests/runtime/tvm/test_aarch64.py does):
#
#   PYTHONPATH=DEST/site:. qemu-aarch64 -L DEST DEST/usr/bin/python3.11 -m runtime.tvm run LIB.so --input X.npy
#
# Debian packages come through a private sources.list, package lists and an empty dpkg
# status (apt resolves the whole dependency closure as for an empty arm64 system), as in
# scripts/fetch_deb.sh. DEST/.complete marks a finished sysroot and holds its layout version
# ($layout below); rerunning with the same version does nothing, an older (or empty) marker
# means the sysroot lacks something this version adds, and it is assembled again.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=$(mkdir -p "${1:-.cache/aarch64-sysroot}" && cd "${1:-.cache/aarch64-sysroot}" && pwd)
python=${PYTHON:-.venv/bin/python}
# bump when the sysroot gains something (2: the onnxruntime wheel, proc/cpuinfo for it)
layout="layout 2: python3.11 apache-tvm numpy onnxruntime proc/cpuinfo"
[ "$(cat "$dest/.complete" 2>/dev/null)" = "$layout" ] && { echo "aarch64 sysroot ready: $dest"; exit 0; }
rm -f "$dest/.complete"

work="$dest/.work"
apt_dir="$work/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/etc/preferences.d" "$work/wheels"
: > "$apt_dir/status"
echo "deb [arch=arm64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
    > "$apt_dir/sources.list"
opts=(-qq "-oDir::Etc::SourceList=$apt_dir/sources.list" -oDir::Etc::SourceParts=/dev/null
      "-oDir::Etc::Preferences=$apt_dir/etc/preferences" "-oDir::Etc::PreferencesParts=$apt_dir/etc/preferences.d"
      "-oDir::State::Lists=$apt_dir/lists" "-oDir::State::status=$apt_dir/status" "-oDir::Cache=$apt_dir/cache"
      -oAPT::Architecture=arm64 -oAPT::Architectures=arm64 -oAPT::Install-Recommends=0
      -oDebug::NoLocking=1 -oAPT::Sandbox::User="$(id -un)")
echo "fetching Debian arm64 packages (bookworm) into $dest"
apt-get "${opts[@]}" update
apt-get "${opts[@]}" -y --download-only install python3.11-minimal libpython3.11-stdlib libstdc++6 >/dev/null
for deb in "$apt_dir"/cache/archives/*.deb; do
    dpkg-deb -x "$deb" "$dest"
done

echo "fetching PyPI aarch64 wheels into $dest/site"
version() { "$python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 --implementation cp \
    --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 -d "$work/wheels" \
    "apache-tvm==$(version apache-tvm)" "apache-tvm-ffi==$(version apache-tvm-ffi)" \
    "numpy==$(version numpy)" "ml_dtypes==$(version ml_dtypes)" "typing_extensions==$(version typing_extensions)" \
    "onnxruntime==$(version onnxruntime)" \
    2> >(grep -v "^WARNING: Location" >&2)
mkdir -p "$dest/site"
for wheel in "$work"/wheels/*.whl; do
    "$python" -m zipfile -e "$wheel" "$dest/site"
done
rm -rf "$work"
# qemu-user 7.2 passes the host's (x86) /proc/cpuinfo through, on which the cpuinfo library
# inside onnxruntime crashes (SIGSEGV at session start); qemu opens DEST/<path> before <path>
# (-L DEST), so an Arm one here is what it reads. CPU features still come from AT_HWCAP, which
# qemu sets per -cpu (cortex-a72: no dot product, cortex-a76: dotprod).
mkdir -p "$dest/proc"
for i in 0 1; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i"
done > "$dest/proc/cpuinfo"
test -x "$dest/usr/bin/python3.11"
ls "$dest"/site/onnxruntime/capi/libonnxruntime.so.* >/dev/null
echo "$layout" > "$dest/.complete"
echo "aarch64 sysroot ready: $dest"
