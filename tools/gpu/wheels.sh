#!/usr/bin/env bash
# Downloads what tools/gpu/check.sh installs on the GPU machine, which has no network, into
# gpu_wheels/ (git-ignored; the device run carries it beside the working tree): the wheels pinned
# in tools/gpu/requirements.txt for CPython 3.12 manylinux x86_64 (--no-deps: the list is complete)
# and the mmcv 2.1.0 source distribution. The wheels are recompressed with LZMA (pip installs them
# as they are), and the folder plus the working tree must fit the 64 MiB a device run may carry.
# Run it on a machine with PyPI, from anywhere: bash tools/gpu/wheels.sh
set -euo pipefail
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/../.."
fail() { echo "wheels: $*" >&2; exit 1; }
LIMIT=$((64 * 1024 * 1024))
TMP=gpu_wheels.tmp

rm -rf "$TMP" && mkdir "$TMP"
$PYTHON -m pip download -q --disable-pip-version-check --no-deps --dest "$TMP" \
  --only-binary=:all: --implementation cp --python-version 3.12 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 -r tools/gpu/requirements.txt \
  || fail "a pinned wheel of tools/gpu/requirements.txt could not be downloaded (see pip above)"
$PYTHON -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: --dest "$TMP" \
  mmcv==2.1.0 || fail "the mmcv 2.1.0 source distribution could not be downloaded (see pip above)"
# not pip's: check.sh runs pip from its wheel, and zipimport reads deflate only
$PYTHON tools/gpu/kit.py repack $(ls "$TMP"/*.whl | grep -v "/pip-")
rm -rf gpu_wheels && mv "$TMP" gpu_wheels

wheels=$(du -cb gpu_wheels/* | tail -1 | cut -f1)
tree=$(git ls-files -z -co --exclude-standard | xargs -0 stat -c %s | paste -sd+ | bc)
mib() { echo "scale=1; $1 / 1048576" | bc; }
if (( wheels + tree > LIMIT )); then
  fail "gpu_wheels/ ($(mib "$wheels") MiB) + working tree ($(mib "$tree") MiB) exceed the 64 MiB a" \
    "device run may carry; drop a package from tools/gpu/requirements.txt or pin a smaller wheel" \
    "(largest: $(ls -S gpu_wheels | head -1))"
fi
echo "wheels: gpu_wheels/ $(ls gpu_wheels | wc -l) files, $(mib "$wheels") MiB; with the working" \
  "tree ($(mib "$tree") MiB) $(mib $((wheels + tree))) of the 64 MiB a device run may carry"
