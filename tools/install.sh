#!/usr/bin/env bash
# Idempotent CPU set-up of the mmlightbb stack (see README "Install").
# mmcv 2.1.0 has no wheel for torch 2.13, so it is built from the PyPI sdist with its CPU ops.
# The build must see torch (no build isolation) and an old setuptools (mmcv's setup.py imports
# pkg_resources, removed in setuptools 82); otherwise pip silently produces an mmcv without ops.
set -euo pipefail
PYTHON=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore
PIP="$PYTHON -m pip --disable-pip-version-check"
cd "$(dirname "$0")/.."

fail() { echo "install: $*" >&2; exit 1; }

# Fast path: everything already installed at the pinned versions, mmcv with its ops.
# (-I: the current directory is not on sys.path, so mmlightbb must really be installed from here.)
if "$PYTHON" -I - "$(pwd)" <<'PY' 2>/dev/null
import importlib.util, os, sys, mmcv, mmcv.ops, mmdet, mmengine, torch, pycocotools, pytest
import onnx, onnxruntime, openvino
assert importlib.util.find_spec('nncf')
assert (mmcv.__version__, mmdet.__version__, mmengine.__version__) == ('2.1.0', '3.3.0', '0.10.7')
assert importlib.util.find_spec('mmpretrain')
assert torch.__version__.startswith('2.13.0')
spec = importlib.util.find_spec('mmlightbb')
assert spec and os.path.samefile(os.path.dirname(spec.origin), os.path.join(sys.argv[1], 'mmlightbb'))
PY
then
  echo "install: stack already complete (torch 2.13.0, mmcv 2.1.0 with ops, mmdet 3.3.0, mmengine 0.10.7, onnx/onnxruntime/openvino, mmlightbb from $(pwd))"
  exit 0
fi

"$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 9)' \
  || fail "Python >= 3.9 is needed (3.11 is the tested version); set PYTHON=/path/to/python3.11"

$PIP install -q "setuptools<82" wheel ninja psutil "numpy<3" torch==2.13.0 \
  || fail "could not install torch 2.13.0 and the build tools (see pip's message above)"
$PIP install -q mmengine==0.10.7 pycocotools matplotlib addict yapf opencv-python packaging pyyaml Pillow \
  || fail "could not install mmengine/pycocotools (see pip's message above)"

if "$PYTHON" -c 'import mmcv, mmcv.ops; assert mmcv.__version__ == "2.1.0"' 2>/dev/null; then
  echo "install: mmcv 2.1.0 with ops already present, skipping the build"
else
  echo "install: building mmcv 2.1.0 with CPU ops from source (about 15 minutes on 2 cores, cached afterwards)"
  $PIP uninstall -q -y mmcv mmcv-lite mmcv-full >/dev/null 2>&1 || true
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} $PIP install --no-build-isolation --no-deps mmcv==2.1.0 \
    || fail "the mmcv 2.1.0 build failed (see the compiler output above)"
  "$PYTHON" -c 'import mmcv.ops' 2>/dev/null \
    || fail "mmcv installed WITHOUT its compiled ops (import mmcv.ops fails); run 'pip cache remove mmcv' and retry"
fi

$PIP install -q mmdet==3.3.0 || fail "could not install mmdet 3.3.0"

# Export, runtimes and INT8 (tools/export.py, tools/benchmark.py --backend, --precision int8):
# wheels that leave the stack above unchanged (checked with pip install --dry-run: onnx 1.23,
# onnxruntime 1.32, openvino 2026.4, nncf 3.4 (+ scikit-learn) next to torch 2.13 / mmcv 2.1.0 /
# mmdet 3.3.0 / mmengine 0.10.7).
$PIP install -q onnx onnxruntime openvino nncf || fail "could not install onnx/onnxruntime/openvino/nncf"

# mmpretrain 1.2.0 for ImageNet pre-training (configs/imagenet/). It adds small pure-Python
# packages and changes nothing of the stack above. It imports torchvision, which must be built for
# the installed torch: for a CPU torch the CPU wheel of PyTorch's index (PyPI's torchvision is a
# CUDA build: its ops do not load beside a CPU torch, "operator torchvision::nms does not exist",
# and since mmdet imports mmpretrain when present, that would break `import mmdet.models`).
$PIP install -q mmpretrain==1.2.0 || fail "could not install mmpretrain 1.2.0"
if ! "$PYTHON" -c 'import torchvision.ops, mmpretrain.models' >/dev/null 2>&1; then
  TORCH_VERSION=$("$PYTHON" -c 'import torch; print(torch.__version__)')
  TV="0.$(( $(echo "$TORCH_VERSION" | cut -d. -f2) + 15 )).*"   # torch 2.13 <-> torchvision 0.28
  $PIP uninstall -q -y torchvision >/dev/null 2>&1 || true
  case "$TORCH_VERSION" in
    *+cu*) # a CUDA build from PyTorch's index: the torchvision of the same index
      $PIP install -q --no-deps "torchvision==$TV" \
        --index-url "https://download.pytorch.org/whl/${TORCH_VERSION##*+}" >/dev/null 2>&1 || true ;;
    *+cpu) ;;  # only PyTorch's CPU index has it, which this set-up does not reach: see the note
    *) $PIP install -q --no-deps "torchvision==$TV" >/dev/null 2>&1 || true ;;   # PyPI's torch
  esac
  if ! "$PYTHON" -c 'import torchvision.ops, mmpretrain.models' >/dev/null 2>&1; then
    $PIP uninstall -q -y torchvision >/dev/null 2>&1 || true   # never leave one that breaks mmdet
    echo "install: note: no torchvision $TV for torch $TORCH_VERSION could be installed here, so mmpretrain does not import: ImageNet pre-training (configs/imagenet/) needs one (CPU torch: pip install --no-deps 'torchvision==$TV' --index-url https://download.pytorch.org/whl/cpu); everything else works"
  fi
fi
$PIP install -q --no-build-isolation --no-deps -e . || fail "could not install mmlightbb itself"
$PIP install -q pytest || fail "could not install pytest"
"$PYTHON" -c 'import mmcv.ops, mmdet, mmlightbb' || fail "the installed stack does not import (see above)"
echo "install: OK ($("$PYTHON" -c 'import torch, mmcv, mmdet, mmengine; print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmengine {mmengine.__version__}")'))"
