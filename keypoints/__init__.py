"""kfkd: facial keypoint detection. The OmegaConf resolvers that conf/ uses are registered here, on import."""
from omegaconf import OmegaConf

from keypoints.hardware import fastest_precision

OmegaConf.register_new_resolver("fastest_precision", fastest_precision, replace=True)
