"""Train one VAE, or with --multirun a sweep of them, as the composed config says.

python pipelines/train.py                                  # the default run, into mlruns/
python pipelines/train.py style=subclass model.latent_dim=8 train.epochs=5
python pipelines/train.py --multirun sweep=demo            # a sweep, grouped in MLflow
python pipelines/train.py --multirun sweep=grid hydra/launcher=packed   # trained together
python pipelines/train.py --multirun model.latent_dim=2,16 sweep.seeds=3   # 3 seeds each
"""

import hydra
from omegaconf import DictConfig

from vaelab.edges.cli import quiet_frameworks, run_command, user_errors
from vaelab.edges.config import register_configs
from vaelab.rules.replicates import with_seed_axis

register_configs()
quiet_frameworks()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Return the objective (validation loss by default), what a sweeper minimises."""
    from vaelab.orchestration.sweep import run_job

    with user_errors():
        return run_job(cfg)


if __name__ == "__main__":
    run_command(main, "config", prepare=with_seed_axis)
