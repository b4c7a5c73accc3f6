"""How good in how many minutes: valid RMSE (or `--metric valid_nme_pct`, the NME) against each run's CPU
minutes, one line per recipe, from the runs' metrics.json; writes the figure and prints the table behind it (markdown), with each
run's wall time as a ratio to a reference run's. The runs must have trained in one precision (their
config.yaml says which), timed side by side on one machine. RESULTS.md's command:

    python -m benchmarks.minutes --reference outputs/p13/fast_120b --out docs/rmse_vs_minutes.png \\
        "tutorial (net6)=outputs/p13/net6_40,outputs/p13/net6_120" "fast until issue 13=outputs/p13/fast_20,..." ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
from omegaconf import OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullLocator  # noqa: E402

# Log-scale RMSE ticks with plain labels, dense where the modern recipes lie (1.5-2 px).
TICKS = LogLocator(subs=(1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0))


def metrics(run: Path) -> dict:
    """The run's metrics.json, with the precision it trained in (its config.yaml holds it resolved)."""
    path, config = run / "metrics.json", run / "config.yaml"
    for file in (path, config):
        if not file.is_file():
            raise SystemExit(f"error: {file}: not found; expected a finished run directory")
    return {**json.loads(path.read_text()), "precision": str(OmegaConf.load(config).trainer.precision)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", help='"LABEL=RUN_DIR,RUN_DIR,..." per recipe, runs in any order')
    parser.add_argument("--reference", type=Path, required=True, help="the run whose wall time the ratios divide by")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument(
        "--metric",
        default="valid_rmse_px",
        choices=["valid_rmse_px", "valid_nme_pct"],
        help="the metrics.json value to plot",
    )
    args = parser.parse_args()
    measure = {"valid_rmse_px": "valid RMSE px", "valid_nme_pct": "valid NME %"}[args.metric]
    reference = metrics(args.reference)
    precisions = {reference["precision"]}
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    print(f"| recipe | run | epochs | wall (min) | wall / reference | {measure} (unseen people) |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for recipe in args.recipes:
        label, _, dirs = recipe.partition("=")
        if not dirs:
            raise SystemExit(f'error: "{recipe}": expected LABEL=RUN_DIR[,RUN_DIR...]')
        runs = [(metrics(Path(d)), d) for d in dirs.split(",")]
        precisions |= {m["precision"] for m, _ in runs}
        points = sorted((m["wall_time_s"], m[args.metric], m["epochs"], d) for m, d in runs)
        for wall, rmse, epochs, d in points:
            print(
                f"| {label} | `{d}` | {epochs} | {wall / 60:.1f} | {wall / reference['wall_time_s']:.2f} | {rmse:.3f} |"
            )
        ax.plot([p[0] / 60 for p in points], [p[1] for p in points], "o-", label=label)
    if len(precisions) > 1:  # bf16 hosts train about 1.9x faster: their minutes are not these minutes
        raise SystemExit(
            f"error: the runs trained in different precisions {sorted(precisions)}; "
            "expected runs timed side by side on one machine"
        )
    ax.set_xlabel(
        f"CPU minutes (trainer.precision {precisions.pop()}); reference run: {reference['wall_time_s'] / 60:.1f} min"
    )
    ax.set_ylabel(f"{measure} on unseen people")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(NullLocator())
    ax.yaxis.set_minor_locator(TICKS)
    # RMSE ticks lie 0.1 px apart; NME ticks, on a narrow range, may lie closer
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%.1f" if args.metric == "valid_rmse_px" else "%.3g"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"\nfigure: {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
