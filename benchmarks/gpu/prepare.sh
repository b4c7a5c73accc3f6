#!/usr/bin/env bash
# Before a GPU run, in the checkout the device tool sends: what the GPU machine cannot reach, copied into
# git-ignored folders of the checkout, which the run's `carry` names (only the checkout travels):
#   bash benchmarks/gpu/prepare.sh DATA    (DATA holds realfaces/, from kfkd data realfaces, and photos/)
#   .data/realfaces/       realfaces, about 30 MB
#   .data/photos/          the first photo of DATA/photos (one face), for the CUDA test of `detect`
#   .data/commit.txt       the commit these files were prepared for (the run reports it)
#   .whl/                  the wheels the GPU image lacks (benchmarks/gpu/wheels.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
data=${1:?usage: bash benchmarks/gpu/prepare.sh DATA (the folder holding realfaces/ and photos/)}
photo=$(find "$data/photos" -maxdepth 1 -name '*.jpg' 2>/dev/null | sort | head -1)
for f in "$data"/realfaces/{training.csv.gz,test.csv.gz,IdLookupTable.csv,training_people.csv} "${photo:-$data/photos/*.jpg}"; do
  [[ -f $f ]] || { echo "error: $f: not found; expected DATA with realfaces/ (kfkd data realfaces) and photos/" >&2; exit 1; }
done
mkdir -p .data/realfaces .data/photos
cp "$data"/realfaces/{training.csv.gz,test.csv.gz,IdLookupTable.csv,training_people.csv} .data/realfaces/
cp "$photo" .data/photos/
echo "$(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with changes)')" > .data/commit.txt
bash benchmarks/gpu/wheels.sh
# What travels: tracked files, untracked files not ignored, and the carried folders; at most 64 MiB.
tree=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
carried=$(du -cb .data .whl | tail -1 | cut -f1)
echo "travels: $(( (tree + carried) >> 20 )) MiB of 64 (checkout $((tree >> 20)) MiB, .data and .whl $((carried >> 20)) MiB)"
(( tree + carried < 60 << 20 )) || { echo "error: over the device tool's 64 MiB" >&2; exit 1; }
