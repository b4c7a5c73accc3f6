"""Compare two studies of the same trials, one searched without pruning and one with (RESULTS.md):
    python benchmarks/search_compare.py outputs/search/unpruned outputs/search/pruned
Prints, per study, the trials by state, the epochs trained, the trials' summed time and the best
objective, and checks that both drew the same parameters."""

import sys
from pathlib import Path

import optuna


def load(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name=sweep.name, storage=f"sqlite:///{sweep}/optuna.db")


def main(unpruned: str, pruned: str) -> None:
    studies = {name: load(Path(name)) for name in (unpruned, pruned)}
    params = [[t.params for t in s.trials] for s in studies.values()]
    print(f"same parameters, trial by trial: {params[0] == params[1]} ({len(params[0])} and {len(params[1])} trials)")
    for name, study in studies.items():
        states = {s.name: sum(t.state == s for t in study.trials) for s in optuna.trial.TrialState if s.is_finished()}
        epochs = sum(len(t.intermediate_values) for t in study.trials)
        seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials)
        best = study.best_trial
        print(
            f"{name}: {states}, {epochs} epochs, trials {seconds:.0f} s in all, best trial {best.number}: "
            f"{best.value:.4f} px"
        )
        for t in study.trials:
            print(
                f"  {t.number:2d} {t.state.name:8s} epochs {len(t.intermediate_values):2d} value "
                f"{t.value if t.value is None else round(t.value, 4)}  {t.params}"
            )


if __name__ == "__main__":
    main(*sys.argv[1:])
