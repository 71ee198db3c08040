#!/usr/bin/env bash
# Download one Debian package and unpack it into a folder, without root and without
# touching the system's apt configuration (a private sources.list and package lists).
#
#   scripts/fetch_deb.sh PACKAGE DEST_DIR [SUITE]
#
# DEST_DIR/root receives the package's files (as `dpkg-deb -x` lays them out).
set -euo pipefail
pkg=${1:?usage: fetch_deb.sh PACKAGE DEST_DIR [SUITE]}
dest=${2:?usage: fetch_deb.sh PACKAGE DEST_DIR [SUITE]}
suite=${3:-trixie}
apt_dir="$(mkdir -p "$dest" && cd "$dest" && pwd)/apt"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" \
    > "$apt_dir/sources.list"
opts=(-qq "-oDir::Etc::SourceList=$apt_dir/sources.list" -oDir::Etc::SourceParts=/dev/null
      "-oDir::State::Lists=$apt_dir/lists" "-oDir::Cache=$apt_dir/cache"
      -oDebug::NoLocking=1 -oAPT::Sandbox::User="$(id -un)")
echo "fetching Debian package $pkg ($suite) into $dest"
apt-get "${opts[@]}" update
(cd "$apt_dir/debs" && apt-get "${opts[@]}" download "$pkg")
dpkg-deb -x "$apt_dir"/debs/"${pkg}"_*.deb "$dest/root"
rm -rf "$apt_dir"
