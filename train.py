"""Train a keypoint net as the Hydra config in conf/ describes: `python train.py [overrides]`."""
import os

import hydra
from omegaconf import DictConfig, OmegaConf

# Run directories end in the process id, so two runs started in the same second never share one.
OmegaConf.register_new_resolver("pid", os.getpid, replace=True)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from keypoints.fit import fit  # after Hydra has parsed the command line: `--help` stays fast

    metrics = fit(cfg)
    print(f"valid RMSE: {metrics['valid_rmse_px']:.3f} px (best epoch {metrics['best_epoch']}, "
          f"{metrics['epochs']} epochs, {metrics['wall_time_s']:.0f} s)")
    print(f"logs: tensorboard --logdir {cfg.paths.output_dir}")
    return metrics["valid_rmse_px"]


if __name__ == "__main__":
    main()
