"""Hydra's entry point for kfkd's Slurm launcher (`hydra/launcher=slurm`). Hydra takes a launcher only
from the hydra_plugins package and imports this at every start: how it waits on its jobs is
keypoints/sweeps/cluster.py's, imported when a sweep launches."""

from omegaconf import OmegaConf

from hydra_plugins.hydra_submitit_launcher import submitit_launcher

# `${gpus_per_job:ACCELERATOR,DEVICES}`: the GPUs a Slurm job asks for (conf/hydra/launcher/slurm.yaml), the trainer's.
OmegaConf.register_new_resolver(
    "gpus_per_job",
    lambda accelerator, devices: (
        (devices if isinstance(devices, int) else len(devices)) if accelerator in ("gpu", "cuda") else None
    ),
    replace=True,
)


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    """hydra-submitit-launcher's: each job a Slurm job, resubmitted by submitit when preempted; the
    sweep waits on its jobs with keypoints.sweeps.cluster.launch."""

    def launch(self, job_overrides, initial_job_idx):
        from keypoints.sweeps.cluster import launch

        return launch(self, job_overrides, initial_job_idx)
