"""Ctrl-C during a packed sweep: one line naming the sweep, a run KILLED, how many more of its
group were, and the command that resumes them."""

import shlex
import signal

from tests.conftest import TINY, isolated, signal_at_epoch, store_for
from vaelab.edges import tracking


def test_an_interrupted_packed_group_is_one_line_counting_its_killed_runs(
    run_app, monkeypatch, tmp_path
):
    args = ["--multirun", *TINY, "train.epochs=4", "seed=1,2,3", "hydra/launcher=packed"]
    with monkeypatch.context() as patch:
        signal_at_epoch(patch, signal.SIGINT, epoch=2)
        result = run_app("train.py", *args)
    assert result.returncode == 130 and "Traceback" not in result.stderr
    killed = [r for r in tracking.find_runs(store_for(tmp_path), {}) if r.status == "KILLED"]
    assert len(killed) == 3
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Interrupted")]
    quiet = ["hydra/job_logging=none", "hydra/hydra_logging=none"]
    command = shlex.join(["python", "pipelines/train.py", *args, *quiet, *isolated(tmp_path)])
    sweep = killed[0].tags["sweep.id"]
    assert line.startswith(f"Interrupted (Ctrl-C): sweep {sweep}: run ")
    assert line.endswith(
        f"KILLED after epoch 2/4 (and 2 more of its group). Resume with: {command}"
    )
    named = line.split(" run ", 1)[1].split(" ", 1)[0]
    assert named in {r.run_id for r in killed}
