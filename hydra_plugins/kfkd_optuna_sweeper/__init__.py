"""Hydra's entry point for kfkd's Optuna sweeper (`hydra/sweeper=optuna`). Hydra takes a sweeper only
from the hydra_plugins package and imports this at every start: the search itself, and Optuna, are
imported when a sweep begins (keypoints/sweeps/search.py)."""

from hydra.plugins.sweeper import Sweeper


class OptunaSweeper(Sweeper):
    def __init__(self, **settings):
        self.settings = settings  # conf/hydra/sweeper/optuna.yaml; read from the config in setup

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments):
        from keypoints.sweeps.search import Search

        return Search(self.config.hydra.sweeper, self.config, self.launcher, self.validate_batch_is_legal).run(
            arguments
        )
