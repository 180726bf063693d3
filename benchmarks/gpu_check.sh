#!/usr/bin/env bash
# The GPU check: run on a machine with a CUDA device, from the repository root.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]
#
# 1. tests/test_cuda.py: the default audit on CUDA, a checkpoint re-audited on CUDA and on the
#    CPU (clean metrics agree, robust accuracy within one image per 100), and the attack
#    batch size changing no number on the GPU;
# 2. the default audit once more on CUDA, timed by phase (report.json's run.durations), with
#    the wall time of the whole command.
# Where auditclf's dependencies are not installed (a bare GPU machine), install wheels carried
# in .whl/ first:  pip install --no-index --no-deps --target /tmp/site .whl/*.whl
# and export PYTHONPATH=/tmp/site before running this script.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/gpu-check}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "NO CUDA DEVICE")'

python3 -m pytest tests/test_cuda.py -q -p no:cacheprovider -W ignore::DeprecationWarning \
  -W ignore::UserWarning --durations=0 2>&1 | tee "$out/test_cuda.log"
tests=${PIPESTATUS[0]}

started=$(date +%s%N)
python3 -m auditclf run --device cuda --out "$out/default" --quiet > "$out/default.log" 2>&1
status=$?
wall_ms=$(( ($(date +%s%N) - started) / 1000000 ))
echo "default audit on CUDA: exit $status, wall $((wall_ms / 1000)).$(printf %03d $((wall_ms % 1000))) s"
python3 - "$out/default/report.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
durations = report["run"]["durations"]
print("phases (s): " + ", ".join(f"{k} {v:.1f}" for k, v in durations.items()))
metrics = report["models"]["baseline"]["metrics"]
for key in ("performance.accuracy", "robustness.pgd_linf@0.1.accuracy", "robustness.reliable"):
    print(f"{key} = {metrics.get(key)}")
EOF
exit $(( tests != 0 ? tests : status ))
