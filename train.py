"""Train a keypoint net as the Hydra config in conf/ describes: `python train.py [overrides]`."""
import os

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

# Run directories end in the process id, so two runs started in the same second never share one;
# cached, so that every job of a multirun, even in a worker process, shares its sweep directory.
OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True, replace=True)
# `${if_null:VALUE,THEN,ELSE}`: conf/config.yaml puts a resumed run back in its own directory.
OmegaConf.register_new_resolver("if_null", lambda value, then, otherwise: then if value is None else otherwise,
                                replace=True)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    # Imported after Hydra has parsed the command line: `--help` stays fast.
    from keypoints.faults import resume_point, user_errors
    from keypoints.fit import fit

    with user_errors():
        resume_from = None
        if cfg.resume is not None:
            cfg, resume_from = resume_point(cfg, HydraConfig.get())
        metrics = fit(cfg, resume_from)
    print(f"valid RMSE: {metrics['valid_rmse_px']:.3f} px (best epoch {metrics['best_epoch']}, "
          f"{metrics['epochs']} epochs, {metrics['wall_time_s']:.0f} s)")
    print(f"logs: tensorboard --logdir {cfg.paths.output_dir}")
    return metrics["valid_rmse_px"]


if __name__ == "__main__":
    main()
