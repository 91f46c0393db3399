"""Write a comparison report of a sweep (or any runs) from the run store.

python pipelines/report.py                     # the latest sweep
python pipelines/report.py sweep_id=<id>
"""

import hydra
from omegaconf import DictConfig

from vaelab.config import register_configs
from vaelab.report import make_report

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    paths = make_report(cfg)
    print(f"Report: {paths['html']}\nBrowse the runs themselves with: make ui")


if __name__ == "__main__":
    main()
