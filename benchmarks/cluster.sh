#!/usr/bin/env bash
# RESULTS.md, "Clusters": on this machine's one-node Slurm and PostgreSQL (eval "$(.ci/services start)"),
#   1. the specialists' sweep with the basic, local (joblib) and Slurm launchers: wall times;
#   2. a run preempted on Slurm (SIGTERM, then USR2, as Slurm and submitit do) against the same run left alone;
#   3. a search shared by two workers on one PostgreSQL study: who ran which trials, how they ended.
#   bash benchmarks/cluster.sh DATA/realfaces > outputs/logs/cluster.log 2>&1
# (from the repository root; DATA is the folder `kfkd data` builds, docs/data.md)
set -uo pipefail
: "${SLURM_CONF:?start the services: eval \"\$(.ci/services start)\"}" "${KFKD_POSTGRES:?}"
DATA=${1:?usage: bash benchmarks/cluster.sh REALFACES_DIR (e.g. DATA/realfaces)}
OUT=${OUT:-outputs/cluster}
data=(data=kaggle "data.dir=$DATA" "data.groups=$DATA/training_people.csv" trainer.enable_progress_bar=false)
slurm=(hydra/launcher=slurm hydra.launcher.partition=debug trainer=cpu hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=4)
TIME="%e s wall, %U s user, %S s sys"
mkdir -p "$OUT"

# 1. The same sweep three ways (the first run also parses the data into outputs/cache/ for the others).
sweep=("${data[@]}" net=cnn_bn trainer.max_epochs=5)
python train.py "${data[@]}" trainer.max_epochs=1 +trainer.limit_train_batches=1 hydra.run.dir="$OUT/warmup"
for launcher in basic local slurm; do
  case $launcher in
    basic) args=() ;;
    local) args=(hydra/launcher=local) ;;
    slurm) args=("${slurm[@]}") ;;
  esac
  /usr/bin/time -f "sweep, $launcher launcher: $TIME" kfkd specialists "${sweep[@]}" "${args[@]}" \
    hydra.sweep.dir="$OUT/sweep_$launcher"
done
python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for run in sorted(p.name for p in (out / "sweep_basic").iterdir() if (p / "metrics.json").is_file()):
    rmse = {l: json.loads((out / f"sweep_{l}" / run / "metrics.json").read_text())["valid_rmse_px"] for l in ("basic", "local", "slurm")}
    print(f"{run}: valid RMSE " + ", ".join(f"{l} {v:.4f} px" for l, v in rmse.items()))
EOF

# 2. Two identical Slurm jobs; job 0 is preempted in its fourth epoch, job 1 is left alone.
preempt=("${data[@]}" experiment=fast trainer.max_epochs=8 seed=0,0 "${slurm[@]}")
python train.py -m "${preempt[@]}" hydra.sweep.dir="$OUT/preempt" > "$OUT/preempt.log" 2>&1 &
sweeping=$!
until [[ -e $OUT/preempt/0_all/hparams.yaml ]]; do kill -0 $sweeping || exit 1; sleep 0.2; done  # training starts
started=$SECONDS
until [[ -e $OUT/preempt/0_all/checkpoints/last.ckpt ]]; do kill -0 $sweeping || exit 1; sleep 0.2; done  # epoch 0 ends
sleep $((3 * (SECONDS - started)))
job=$(sed -n 's/.*#0 : Slurm job \([^ ]*\) :.*/\1/p' "$OUT/preempt.log")
pid=$(scontrol listpids "$(squeue -h -j "$job" -o %A)" | awk '$3 == "0" {print $1}')
echo "preempting Slurm job $job (process $pid) $((SECONDS - started)) s into its training"
kill -TERM "$pid"; kill -USR2 "$pid"  # as Slurm and submitit's Job._interrupt do
wait $sweeping
tail -n 3 "$OUT/preempt.log"
python - "$OUT/preempt" <<'EOF'
import json, sys
from pathlib import Path
sweep = Path(sys.argv[1])
preempted, alone = (json.loads((sweep / f"{n}_all" / "metrics.json").read_text()) for n in (0, 1))
for name, m in [("preempted and resumed", preempted), ("left alone", alone)]:
    print(f"{name}: valid RMSE {m['valid_rmse_px']:.6f} px, valid loss {m['valid_loss']!r}, best epoch {m['best_epoch']}, "
          f"{m['epochs']} epochs")
print("same history, epoch by epoch:", preempted["history"] == alone["history"])
print((sweep / "0_all" / "train.log").read_text())
EOF

# 3. Two workers of one search on PostgreSQL, started together.
db=kfkd_two_workers
python - "$KFKD_POSTGRES" "$db" <<'EOF'
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as server:
    server.execute(f"DROP DATABASE IF EXISTS {sys.argv[2]}")
    server.execute(f"CREATE DATABASE {sys.argv[2]}")
EOF
search=(hparams_search=fast "${data[@]}" trainer.max_epochs=6 hydra.sweeper.n_trials=10
        hydra.sweeper.study_name=two_workers "hydra.sweeper.storage=${KFKD_POSTGRES%/*}/$db")
for worker in a b; do
  /usr/bin/time -f "worker $worker: $TIME" python train.py -m "${search[@]}" > "$OUT/worker_$worker.log" 2>&1 &
done
wait
tail -n 8 "$OUT"/worker_*.log
python - "${KFKD_POSTGRES%/*}/$db" "$OUT" <<'EOF'
import re, sys, collections
from pathlib import Path
import optuna
study = optuna.load_study(study_name="two_workers", storage=sys.argv[1])
ran = {w: [int(n) for n in re.findall(r"\t#(\d+) : ", (Path(sys.argv[2]) / f"worker_{w}.log").read_text())] for w in "ab"}
for w, numbers in ran.items():
    states = collections.Counter(study.trials[n].state.name for n in numbers)
    print(f"worker {w}: trials {numbers}: {dict(states)}")
params = [tuple(sorted(t.params.items())) for t in study.trials]
print(f"{len(study.trials)} trials, {len(set(params))} distinct parameter sets, best: trial {study.best_trial.number}, "
      f"{study.best_value:.4f} px")
EOF
