"""Re-create a run or a sweep from the run store alone, and show it got the same numbers.

python pipelines/rerun.py run_id=<id>
python pipelines/rerun.py sweep_id=<id>
python pipelines/rerun.py run_id=<id> strict=true
"""

import hydra
from omegaconf import DictConfig

from vaelab.config import register_configs
from vaelab.rerun import rerun

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="rerun")
def main(cfg: DictConfig) -> None:
    for comparison in rerun(cfg):
        print(comparison.table())
        print(f"largest absolute difference: {comparison.max_abs_difference:.3g}\n")


if __name__ == "__main__":
    main()
