"""Write a comparison report of a sweep (or any runs) from the run store; never trains.

python pipelines/report.py                     # the latest sweep (or the latest runs)
python pipelines/report.py sweep_id=<id>
"""

import hydra
from omegaconf import DictConfig

from vaelab.edges.cli import quiet_frameworks, run_command, user_errors
from vaelab.edges.config import register_configs
from vaelab.edges.ui import browse_hint

register_configs()
quiet_frameworks()


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    from vaelab.orchestration.report import make_report

    with user_errors():
        paths = make_report(cfg)
    print(f"Report: {paths['html']}\nBrowse the runs themselves: {browse_hint(cfg.tracking.uri)}")


if __name__ == "__main__":
    run_command(main, "report")
