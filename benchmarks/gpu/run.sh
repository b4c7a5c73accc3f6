#!/usr/bin/env bash
# The GPU run: checks and measures every GPU path of kfkd in about 8 minutes, and stops by itself.
#
#   benchmarks/gpu/run.sh [OUT] [--smoke] [--stages abcd] [--budget SECONDS]
#
# Run it from a checkout that benchmarks/gpu/prepare.sh has prepared (realfaces in .data/, the wheels
# the GPU image lacks in .whl/). Results go to OUT (default $OUT): log.txt, figures.json,
# metrics.json, cuda_tests.xml. benchmarks/gpu/stages.py says what each stage does.
# `--smoke`: every stage on CPU with tiny sizes, in about a minute and a half (CI runs it).
set -uo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# stages.py keeps its own deadline (480 s, smoke 240 s, or --budget); this one only catches a driver
# that hangs itself.
budget=480 given=
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    --smoke) budget=240 ;;
    --budget) given=${args[i+1]:-} ;;
    --budget=*) given=${args[i]#--budget=} ;;
  esac
done
[[ $given =~ ^[0-9]+ ]] && budget=${BASH_REMATCH[0]}
if command -v timeout >/dev/null; then
  exec timeout --signal=TERM --kill-after=10 $((budget + 40)) "$python" benchmarks/gpu/stages.py "$@"
fi
exec "$python" benchmarks/gpu/stages.py "$@"
