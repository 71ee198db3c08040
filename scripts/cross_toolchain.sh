#!/usr/bin/env bash
# Make the aarch64 cross toolchain that the ARM tests need available: aarch64-linux-gnu-g++
# (and -gcc) and qemu-aarch64, from Debian's g++-aarch64-linux-gnu and qemu-user.
#
#   scripts/cross_toolchain.sh [DEST]          (default: .cache/cross)
#
# - Already on PATH: nothing to do.
# - Root (CI): `apt-get install g++-aarch64-linux-gnu qemu-user` into the system.
# - Otherwise, without root: the same packages and the dependencies this system lacks are
#   downloaded through a private apt cache (the system's package lists and dpkg status, read
#   only) and unpacked into DEST/root; DEST/bin gets wrappers that run them from there. The
#   compiler wrapper passes --sysroot=DEST/root, so the linker resolves the absolute paths in
#   the cross libc's linker scripts (/usr/aarch64-linux-gnu/lib/libc.so) inside DEST/root;
#   qemu finds its shared libraries (libcapstone, liburing) through LD_LIBRARY_PATH.
#   The Makefile puts DEST/bin first on PATH for `make test`.
# DEST/.complete marks a finished setup; rerunning then does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=$(mkdir -p "${1:-.cache/cross}" && cd "${1:-.cache/cross}" && pwd)
packages=(g++-aarch64-linux-gnu qemu-user)
have() { PATH="$dest/bin:$PATH" command -v aarch64-linux-gnu-g++ >/dev/null && PATH="$dest/bin:$PATH" command -v qemu-aarch64 >/dev/null; }
if [ -f "$dest/.complete" ] && have; then
    exit 0
fi
if have; then
    touch "$dest/.complete"
    exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${packages[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; }
else
    echo "fetching ${packages[*]} into $dest (no root: unpacked, not installed)"
    apt_dir="$dest/apt"
    mkdir -p "$apt_dir/cache/archives/partial"
    opts=(-qq "-oDir::Cache=$apt_dir/cache" -oDebug::NoLocking=1 -oAPT::Install-Recommends=0
          -oAPT::Sandbox::User="$(id -un)")
    apt-get "${opts[@]}" -y --download-only install "${packages[@]}" >/dev/null
    rm -rf "$dest/root" "$dest/bin"
    mkdir -p "$dest/root" "$dest/bin"
    for deb in "$apt_dir"/cache/archives/*.deb; do
        dpkg-deb -x "$deb" "$dest/root"
    done
    rm -rf "$apt_dir"
    # binutils (libopcodes, libbfd) and qemu (libcapstone, liburing) load libraries from there
    libs="LD_LIBRARY_PATH=\"$dest/root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
    for tool in g++ gcc; do
        printf '#!/bin/sh\n%s exec "%s/root/usr/bin/aarch64-linux-gnu-%s" --sysroot="%s/root" "$@"\n' \
            "$libs" "$dest" "$tool" "$dest" > "$dest/bin/aarch64-linux-gnu-$tool"
    done
    printf '#!/bin/sh\n%s exec "%s/root/usr/bin/qemu-aarch64" "$@"\n' "$libs" "$dest" > "$dest/bin/qemu-aarch64"
    chmod +x "$dest"/bin/*
fi
have || { echo "error: aarch64-linux-gnu-g++ / qemu-aarch64 still missing after setup" >&2; exit 1; }
touch "$dest/.complete"
echo "aarch64 cross toolchain ready"
