"""Re-create a run or a sweep from the run store alone, and show it got the same numbers.

python pipelines/rerun.py run_id=<id>
python pipelines/rerun.py sweep_id=<id>
python pipelines/rerun.py run_id=<id> strict=true
"""

import hydra
from omegaconf import DictConfig

from vaelab.edges.cli import quiet_frameworks, run_command, user_errors
from vaelab.edges.config import register_configs

register_configs()
quiet_frameworks()


@hydra.main(version_base="1.3", config_path="../conf", config_name="rerun")
def main(cfg: DictConfig) -> None:
    from vaelab.orchestration.rerun import rerun

    with user_errors():
        for comparison in rerun(cfg):
            print(comparison.table())
            print(f"largest absolute difference: {comparison.max_abs_difference:.3g}\n")


if __name__ == "__main__":
    run_command(main, "rerun")
