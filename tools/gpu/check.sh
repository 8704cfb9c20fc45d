#!/usr/bin/env bash
# The GPU check (docs/gpu.md), from the repository root of a checkout that carries gpu_wheels/
# (tools/gpu/wheels.sh), on a CUDA machine without network:
#   bash tools/gpu/check.sh OUT_DIR                 venv + wheels, mmcv 2.1.0's ops built for this
#                                                   GPU, pytest -m cuda, a benchmark
#   bash tools/gpu/check.sh OUT_DIR --cpu-dry-run   the same steps on a CPU machine: the installed
#       mmcv (no build), the CUDA tests skipped (collected), a tiny training, test and benchmark
#       on the CPU, all in a venv that sees only what the GPU machine has (the imports it could
#       not satisfy are listed)
# OUT_DIR gets report.json and report.md (rewritten after every step: a killed run leaves its
# report) and logs/. Each step gets what is left of GPU_CHECK_BUDGET_S (default 540 s, dry run
# 900 s); PYTHON (default python3) is the interpreter that has torch. Exit 0 when all passed.
set -euo pipefail
[[ $# -ge 1 && ( $# -eq 1 || ${2:-} == --cpu-dry-run ) ]] \
  || { echo "check: usage: bash tools/gpu/check.sh OUT_DIR [--cpu-dry-run]" >&2; exit 2; }
export PYTHON=${PYTHON:-python3} PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
export REPO=$(cd "$(dirname "$0")/../.." && pwd)
export OUT=$(mkdir -p "$1" && cd "$1" && pwd)
export DRY=$([[ ${2:-} == --cpu-dry-run ]] && echo 1 || echo 0)
export WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
export VENV=$WORK/venv VPY=$WORK/venv/bin/python WHEELS=$REPO/gpu_wheels
BUDGET=${GPU_CHECK_BUDGET_S:-$( ((DRY)) && echo 900 || echo 540)}
DEADLINE=$(( $(date +%s) + BUDGET ))
cd "$REPO"
trap 'rm -rf "$WORK"' EXIT
trap 'exit 143' TERM INT  # so that a stopped run removes its venv too
# the carried pip (its vendored packaging serves kit.py too); the dry run can do without
export PIP_WHL=$(ls "$WHEELS"/pip-*.whl 2>/dev/null | head -1)
[[ -n $PIP_WHL || $DRY == 1 ]] \
  || { echo "check: no $WHEELS/pip-*.whl: run 'bash tools/gpu/wheels.sh' on a machine with PyPI and carry gpu_wheels/" >&2; exit 2; }
mkdir -p "$OUT/logs" "$OUT/bench"
rm -f "$OUT"/steps.tsv "$OUT"/build_*.json "$OUT"/bench/*.json "$OUT"/logs/*
cat >"$OUT/meta.json" <<EOF
{"mode": "$( ((DRY)) && echo cpu-dry-run || echo gpu)", "started": "$(date -u +%FT%TZ)", "budget_s": $BUDGET,
 "commit": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo +changes)"}
EOF

# step NAME KEEP_S CAP_S FUNCTION: run FUNCTION for at most CAP_S seconds, leaving KEEP_S of the
# budget to later steps; log to logs/NAME.log, record status and wall time, rewrite the report.
step() {
  local name=$1 keep=$2 cap=$3 fn=$4 limit rc start status note=""
  limit=$(( DEADLINE - $(date +%s) - keep ))
  (( limit > cap )) && limit=$cap
  if (( limit < 5 )); then
    record "$name" skipped 0 0 "no time left of the ${BUDGET} s budget"; return 1
  fi
  start=$(date +%s.%N)
  rc=0; timeout --kill-after=10 "$limit" bash -c "set -euo pipefail; $fn" >"$OUT/logs/$name.log" 2>&1 || rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status=timeout; note="stopped after ${limit} s" ;;
    *) status=failed; note=$(grep -v '^\s*$' "$OUT/logs/$name.log" | tail -1 | cut -c1-300) ;;
  esac
  record "$name" "$status" "$(echo "$(date +%s.%N) - $start" | bc)" "$rc" "$note"
  return "$rc"
}
record() {
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5//$'\t'/ }" >>"$OUT/steps.tsv"
  "$PYTHON" tools/gpu/kit.py report "$OUT" >/dev/null || true
}

probe() { "$PYTHON" tools/gpu/kit.py probe $( ((DRY)) || echo --cuda) | tee "$OUT/probe.json"; }
make_venv() {
  PYTHONPATH=$PIP_WHL "$PYTHON" tools/gpu/kit.py make-venv "$VENV" "$REPO" \
    $( ((DRY)) && echo --guard "$OUT/logs/guard.log")
}
install() {  # every carried wheel (dry run: those this Python can install), scipy's stand-in
  local wheels
  if [[ -n $PIP_WHL ]]; then
    wheels=$(PYTHONPATH=$PIP_WHL "$VPY" tools/gpu/kit.py fit $( ((DRY)) || echo --strict) "$WHEELS"/*.whl)
    "$VPY" "$PIP_WHL/pip" install --no-index --no-deps --ignore-installed \
      --no-warn-script-location $wheels
  else
    echo "no gpu_wheels/ (dry run): nothing installed, the wheels are not checked; bash tools/gpu/wheels.sh fetches them"
  fi
  if ! "$VPY" -c 'import scipy.optimize' 2>/dev/null; then
    cp -r tools/gpu/stubs/scipy "$("$VPY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/"
    echo "scipy is not on this machine: tools/gpu/stubs/scipy stands in"
  fi
}
mmcv_source() {  # the sdist, and a header shim where this torch lacks THC/THCAtomics.cuh
  tar -xzf "$WHEELS/mmcv-2.1.0.tar.gz" -C "$WORK"
  local include
  include=$("$VPY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "include"))')
  if [[ -e $include/THC/THCAtomics.cuh ]]; then
    echo "torch has THC/THCAtomics.cuh (mmcv's CUDA helper includes it)" | tee "$WORK/compat"
  else
    mkdir -p "$WORK/shim/THC"
    echo '#include <ATen/cuda/Atomic.cuh>' >"$WORK/shim/THC/THCAtomics.cuh"
    echo "torch lacks THC/THCAtomics.cuh: a shim including ATen/cuda/Atomic.cuh (CPATH)" | tee "$WORK/compat"
  fi
}
build_mmcv() {  # $1: cuda | cpu (the fallback when the CUDA build fails: CPU ops only)
  local arch=none
  if [[ $1 == cuda ]]; then
    arch=$("$VPY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
    export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch
  else
    export FORCE_CUDA=0 CUDA_VISIBLE_DEVICES=
  fi
  [[ -d $WORK/shim ]] && export CPATH=$WORK/shim${CPATH:+:$CPATH}
  local rc=0
  MMCV_WITH_OPS=1 MAX_JOBS=$(nproc) PATH=$VENV/bin:$PATH "$VPY" -m pip install --no-index \
    --no-deps --no-build-isolation "$WORK/mmcv-2.1.0" >"$WORK/build.log" 2>&1 || rc=$?
  "$PYTHON" tools/gpu/kit.py build-info "$WORK/build.log" "$arch" "$(nproc)" "$(cat "$WORK/compat")" \
    >"$OUT/build_$1.json"
  cat "$WORK/build.log"
  (( rc == 0 )) || { echo "mmcv build ($1) failed: first error: $(grep -m1 '"first_error"' "$OUT/build_$1.json")"; return "$rc"; }
  "$VPY" -c 'import mmcv.ops; print("mmcv", mmcv.__version__, "with ops from", mmcv.__file__)'
}
smoke() { "$VPY" tools/gpu/kit.py smoke $( ((DRY)) || echo --cuda); }
tests() {
  PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 "$VPY" -m pytest tests/test_cuda.py -m cuda -v -rA \
    -p no:cacheprovider --durations=15
}
cpu_run() {  # dry run: the CUDA tests' training, test, benchmark and plots, tiny, on the CPU
  "$VPY" tools/make_sonar_dataset.py --out "$WORK/sonar" --num-train 4 --num-val 2 --size 64
  "$VPY" tools/compare_backbones.py "$WORK/sonar" --out "$WORK/cmp" --heads yolox cascade \
    --backbones fasternet:t0 --epochs 1 --size 64 --batch-size 2 --bench-iters 1 --device cpu
}
benchmark() { "$VPY" tools/gpu/kit.py bench "$OUT/bench" $( ((DRY)) && echo --cpu); }
export -f probe make_venv install mmcv_source build_mmcv smoke tests cpu_run benchmark

# KEEP_S: seconds of the budget the later steps need at least (build: import + tests)
if step probe 0 60 probe && step venv 0 60 make_venv && step install 0 180 install; then
  if [[ -e $WHEELS/mmcv-2.1.0.tar.gz || $DRY == 0 ]]; then step mmcv_source 0 60 mmcv_source || true
  else record mmcv_source "not run" 0 0 "no gpu_wheels/ (dry run)"; fi
  if ((DRY)); then
    record build_mmcv "not run" 0 0 "dry run: the installed mmcv $("$VPY" -c 'import mmcv; print(mmcv.__version__)' 2>&1 | tail -1) stands in"
  else
    step build_mmcv 150 900 "build_mmcv cuda" || step build_mmcv_cpu_ops 120 600 "build_mmcv cpu" || true
  fi
  step smoke 0 90 smoke || true
  step tests 30 600 tests || true
  if ((DRY)); then step cpu_run 0 600 cpu_run || true; fi
  step benchmark 0 600 benchmark || true
fi
"$PYTHON" tools/gpu/kit.py report "$OUT"
