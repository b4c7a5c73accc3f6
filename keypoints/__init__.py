"""kfkd: facial keypoint detection. The OmegaConf resolvers that conf/ uses are registered here, on import."""

import os

from omegaconf import OmegaConf

from keypoints.core.keypointset import subset
from keypoints.training.hardware import fastest_precision

OmegaConf.register_new_resolver("fastest_precision", fastest_precision, replace=True)
# Run directories end in the process id, so two runs started in the same second never share one;
# cached, so that every job of a multirun, even in a worker process, shares its sweep directory.
OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True, replace=True)
# `${if_null:VALUE,THEN,ELSE}`: conf/config.yaml puts a resumed run back in its own directory.
OmegaConf.register_new_resolver(
    "if_null", lambda value, then, otherwise: then if value is None else otherwise, replace=True
)
# `${subset:${keypoints},${specialist},columns}` (or flip_indices): what the flip needs of the run's specialist.
OmegaConf.register_new_resolver("subset", subset, replace=True)
