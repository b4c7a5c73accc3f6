#!/usr/bin/env bash
# RESULTS.md, "Hyperparameter search": hparams_search=fast on realfaces' person split with and without
# pruning, then the fast preset on the same epochs and the best trial's printed command.
#   bash benchmarks/search_pruning.sh DATA/realfaces > outputs/logs/search_pruning.log 2>&1
# (from the repository root; DATA is the folder `kfkd data` builds, docs/data.md)
# Both searches draw the same 12 trials: a seeded random sampler's draws do not depend on the results,
# so pruning changes only where trials stop (TPE would see the pruned history and propose other trials).
# Run once: the studies stay in outputs/search/, and the same commands would only continue them.
set -uo pipefail
DATA=${1:?usage: bash benchmarks/search_pruning.sh REALFACES_DIR (e.g. DATA/realfaces)}
data=(data=kaggle "data.dir=$DATA" "data.groups=$DATA/training_people.csv" trainer.enable_progress_bar=false)
search=(hparams_search=fast "${data[@]}" hydra.sweeper.sampler._target_=optuna.samplers.RandomSampler
        '~hydra.sweeper.sampler.n_startup_trials')
TIME="%e s wall, %U s user, %S s sys"
# First, as it also parses the data into outputs/cache/ for both searches: the fast preset on their budget.
/usr/bin/time -f "fast, 12 epochs: $TIME" python train.py experiment=fast trainer.max_epochs=12 "${data[@]}" \
  hydra.run.dir=outputs/search/fast_12_epochs
/usr/bin/time -f "search without pruning: $TIME" python train.py -m "${search[@]}" hydra.sweeper.study_name=unpruned \
  hydra.sweeper.pruner._target_=optuna.pruners.NopPruner '~hydra.sweeper.pruner.min_resource' \
  '~hydra.sweeper.pruner.reduction_factor'
/usr/bin/time -f "search with pruning: $TIME" python train.py -m "${search[@]}" hydra.sweeper.study_name=pruned
# The command the pruned search printed for its best trial, as a user would run it.
best=$(sed -n 's/^# python train.py //p' outputs/search/pruned/best.yaml)
eval "/usr/bin/time -f 'best trial again: $TIME' python train.py $best hydra.run.dir=outputs/search/pruned_best"
