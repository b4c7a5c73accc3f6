#!/usr/bin/env bash
# The wheels the GPU machine's image lacks, into .whl/ (git-ignored): it has torch, Lightning,
# torchmetrics, numpy, pandas, onnx(runtime), pytest and more (the device library's KINDS.md), but not
# Hydra and its launchers, submitit or Optuna, and it cannot download. Python 3.12, manylinux x86-64,
# one version of each (those the project is tested with here), none of their dependencies: the check at
# the end lists any requirement that neither a wheel nor the image provides.
set -euo pipefail
cd "$(dirname "$0")/../.."
python=${PYTHON:-python3}
wheels=(hydra-core==1.3.8 omegaconf==2.3.1 hydra-joblib-launcher==1.2.0 hydra-submitit-launcher==1.2.0
        submitit==1.5.4 optuna==5.0.0 alembic==1.20.1 mako==1.4.3 colorlog==6.12.0 sqlalchemy==2.1.9)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
manylinux=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for spec in "${wheels[@]}"; do
  # A pure-Python wheel where the project publishes one (SQLAlchemy does, beside its compiled ones):
  # the same file then installs on this host's Python too, so the smoke test can try it; else CPython 3.12's.
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation py --abi none \
      --platform any -d "$tmp" "$spec" 2>/dev/null ||
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      "${manylinux[@]}" -d "$tmp" "$spec"
done
# antlr4-python3-runtime (Hydra's and OmegaConf's parser) is published as a source archive only: built
# here into a py3-none-any wheel.
"$python" -m pip wheel -q --no-deps -w "$tmp" antlr4-python3-runtime==4.9.3
"$python" benchmarks/gpu/stages.py --check-wheels "$tmp"
rm -rf .whl
mkdir .whl
cp "$tmp"/*.whl .whl/
ls -l .whl
