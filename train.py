"""Train a keypoint net as the Hydra config in conf/ describes: `python train.py [overrides]`."""
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import keypoints  # noqa: F401  registers the resolvers conf/ uses


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    # Imported after Hydra has parsed the command line: `--help` stays fast.
    from keypoints.cluster import requeued
    from keypoints.faults import resume_point, user_errors
    from keypoints.fit import fit

    with user_errors():
        if cfg.resume is not None:
            cfg, resume_from = resume_point(cfg, HydraConfig.get())
        else:  # a Slurm job started again goes on where it was preempted
            cfg, resume_from = requeued(cfg)
        metrics = fit(cfg, resume_from)
    nme = metrics["valid_nme_pct"]
    print(f"valid RMSE: {metrics['valid_rmse_px']:.3f} px"
          + (f", NME {nme:.2f} %, failure rate {metrics['valid_failure_pct']:.1f} %" if nme is not None else "")
          + f" (best epoch {metrics['best_epoch']}, {metrics['epochs']} epochs, {metrics['wall_time_s']:.0f} s)")
    print(f"logs: tensorboard --logdir {cfg.paths.output_dir}")
    return metrics["valid_rmse_px"]


if __name__ == "__main__":
    main()
