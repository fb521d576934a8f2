#!/usr/bin/env bash
# Build (once, cached) what `make arm64-check` runs on: an arm64 Debian bookworm root with
# Python 3.11 (the Python of 64-bit Raspberry Pi OS bookworm) and, beside it, the trap's Python
# packages for aarch64, installed from the Pi's pinned constraints (edge/requirements-pi.txt).
#   arm64/sysroot.sh CACHE_DIR
# Needs: debootstrap, uv, network to Debian and PyPI the first time. Rebuilds the packages when
# the constraints change (their hash names the folder).
set -euo pipefail
cache=${1:?usage: arm64/sysroot.sh CACHE_DIR}
here=$(cd "$(dirname "$0")/.." && pwd)
root=$cache/root
constraints=$here/edge/requirements-pi.txt
tests=$here/arm64/test-requirements.txt
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ ! -x "$root/usr/bin/python3.11" ]; then
  rm -rf "$root" && mkdir -p "$cache"
  echo "arm64: debootstrap (first stage only: nothing arm64 is executed) into $root"
  # --foreign only downloads and unpacks; python3.11 and its libraries come in as --include
  debootstrap --foreign --arch=arm64 --variant=minbase --include=python3.11,libpython3.11-stdlib \
    bookworm "$root" "$mirror" > "$cache/debootstrap.log"
  # the first stage unpacked only the essential packages: unpack the rest (python3.11 and the
  # libraries it links: libssl3, libsqlite3-0, libffi8, libexpat1, ...) the same way
  for deb in "$root"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$root"; done
  # unpacking re-created /bin, /lib and /sbin as folders: make them the merged-/usr links again
  for dir in bin lib sbin; do
    if [ -d "$root/$dir" ] && [ ! -L "$root/$dir" ]; then
      cp -a "$root/$dir/." "$root/usr/$dir/" && rm -rf "${root:?}/$dir" && ln -s "usr/$dir" "$root/$dir"
    fi
  done
  rm -rf "$root"/var/cache/apt/archives/*.deb
fi

digest=$(cat "$constraints" "$tests" | sha256sum | cut -c1-12)
site=$cache/site-$digest
if [ ! -d "$site" ]; then
  echo "arm64: installing the edge packages for aarch64 from $(basename "$constraints") into $site"
  rm -rf "$cache"/site-* "$site.tmp"
  uv pip install --quiet --python-platform aarch64-unknown-linux-gnu --python-version 3.11 \
    --target "$site.tmp" -r "$constraints" -r "$tests"
  mv "$site.tmp" "$site"
fi
ln -sfn "$(basename "$site")" "$cache/site"
