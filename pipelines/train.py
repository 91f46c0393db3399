"""Train one VAE (or, with --multirun, a sweep) as the composed config says.

python pipelines/train.py                           # the default run, logged to mlruns/
python pipelines/train.py style=subclass model.latent_dim=8 train.epochs=5
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from vaelab.config import register_configs
from vaelab.run import train_and_evaluate

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Return the validation loss, the objective a sweeper minimises."""
    result = train_and_evaluate(cfg, overrides=HydraConfig.get().overrides.task)
    return result.metrics["val/total"]


if __name__ == "__main__":
    main()
