#!/usr/bin/env bash
# The GPU check: run on a machine with a CUDA device, from the repository root.
#
#   bash benchmarks/gpu_check.sh [OUTDIR]
#
# 1. tests/test_cuda.py: the default audit on CUDA, a checkpoint re-audited on CUDA and on the
#    CPU (clean metrics agree, robust accuracy within one image per 100), and the attack
#    batch size changing no number on the GPU;
# 2. benchmarks/gpu_scenarios.py: the issue-11 table re-measured (default audit, checkpoint
#    re-audit, ResNet-18 on 50,000 shapes, ResNet-50 at 224 px on 10,000 test images), each
#    timed end to end and by phase, against its target.
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

python3 benchmarks/gpu_scenarios.py "$out/scenarios" 2>&1 | tee "$out/scenarios.log"
status=${PIPESTATUS[0]}
exit $(( tests != 0 ? tests : status ))
