"""Live progress on a terminal (a pseudo-terminal here). Off a terminal the output is the
plain log lines: tests/test_cli.py::test_a_run_prints_vaelabs_own_progress_and_result_only."""

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

import pytest

from tests.conftest import REPO, TINY, isolated
from vaelab.edges.cli import RAW_STDERR

SWEEP = ["--multirun", *TINY, "train.epochs=2", "model.latent_dim=2,4"]


def on_a_terminal(command: list[str], tmp_path) -> str:
    """Everything the command writes to a pseudo-terminal (stdout and stderr both)."""
    environment = {k: v for k, v in os.environ.items() if k != RAW_STDERR}
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 160 columns
    process = subprocess.Popen(
        command, stdin=follower, stdout=follower, stderr=follower, env=environment,
        cwd=tmp_path, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 1.0)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the terminal closed: the command ended
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    process.wait(timeout=240)
    os.close(leader)
    assert process.returncode == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.long
def test_a_sweep_on_a_terminal_shows_its_runs_and_each_runs_steps(tmp_path, keep_dir):
    script = str(REPO / "pipelines" / "train.py")
    shown = on_a_terminal([sys.executable, script, *SWEEP, *isolated(tmp_path)], tmp_path)
    (keep_dir / "sweep_on_a_terminal.txt").write_text(shown)  # what a user sees, kept
    # The sweep's bar: runs done of the total, with what each ended as and an ETA.
    assert re.search(r"sweep \w+ +100%\|[^|]*\| 2/2 runs \[[\d:]+<00:00, 2 done, 0 pruned, "
                     r"0 failed, 0 skipped\]", shown), shown[-3000:]  # fmt: skip
    # Each run's bar: its steps (2 epochs of 256 digits in batches of 64), epoch and losses.
    steps = re.findall(r"run \w{8} +\d+%\|[^|]*\| (\d+)/8 steps \[[\d:]+<[\d:?]+, epoch (\d)/2, "
                       r"train/total [\d.]+, val/total [\d.]+\]", shown)  # fmt: skip
    assert ("8", "2") in steps and ("4", "1") in steps, shown[-3000:]
    # The log lines still come, above the bars.
    assert shown.count("FINISHED: val/total") == 2
