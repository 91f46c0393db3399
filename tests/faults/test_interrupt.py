"""Ctrl-C and SIGTERM end a command in one line: the run it ended KILLED, after which epoch,
and the command that resumes it (the same one again), with the shell's exit status for the
signal; no traceback."""

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, TINY, isolated, signal_at_epoch, store_for
from vaelab.edges import tracking
from vaelab.edges.cli import RAW_STDERR

# What run_app adds to a command line (conftest.app_in): the resume command repeats it.
QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]


def resume_command(tmp_path, args) -> str:
    return shlex.join(["python", "pipelines/train.py", *args, *QUIET, *isolated(tmp_path)])


def the_interrupt_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    (line,) = [x for x in stderr.splitlines() if x.startswith("Interrupted")]
    return line


def killed_run(tmp_path):
    (run,) = [r for r in tracking.find_runs(store_for(tmp_path), {}) if r.status == "KILLED"]
    return run


def logged_epochs(tmp_path, run_id) -> list[int]:
    return [s for s, _ in tracking.metric_history(store_for(tmp_path), run_id, "val/total")]


@pytest.mark.parametrize(
    "signum, how, status", [(signal.SIGINT, "Ctrl-C", 130), (signal.SIGTERM, "SIGTERM", 143)]
)
def test_a_signal_during_a_run_is_one_line_naming_the_run_its_epoch_and_the_resume_command(
    run_app, monkeypatch, tmp_path, signum, how, status
):
    args = [*TINY, "train.epochs=3"]
    with monkeypatch.context() as patch:
        signal_at_epoch(patch, signum, epoch=2)
        result = run_app("train.py", *args)
    assert result.returncode == status
    run = killed_run(tmp_path)
    assert logged_epochs(tmp_path, run.run_id) == [1, 2]
    assert the_interrupt_line(result.stderr) == (
        f"Interrupted ({how}): run {run.run_id} KILLED after epoch 2/3. "
        f"Resume with: {resume_command(tmp_path, args)}"
    )


def test_a_signal_during_a_sweep_names_the_sweep_too(run_app, monkeypatch, tmp_path):
    args = ["--multirun", *TINY, "train.epochs=1,3"]
    with monkeypatch.context() as patch:
        signal_at_epoch(patch, signal.SIGINT, epoch=2, epochs=3)
        result = run_app("train.py", *args)
    assert result.returncode == 130
    run = killed_run(tmp_path)
    sweep = run.tags["sweep.id"]
    assert the_interrupt_line(result.stderr) == (
        f"Interrupted (Ctrl-C): sweep {sweep}: run {run.run_id} KILLED after epoch 2/3. "
        f"Resume with: {resume_command(tmp_path, args)}"
    )


# Long enough to be signalled mid-training: ~0.1 s per epoch on 2 CPU cores.
SLOW = [*TINY, "data.train_limit=2048", "train.epochs=400"]


def interrupt_process(tmp_path, signum, *args):
    """The real command in its own process, signalled once its run has logged two epochs;
    its stderr as a user's terminal would show it (the native-line filter on)."""
    command = [sys.executable, str(REPO / "pipelines/train.py"), *args, *isolated(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != RAW_STDERR}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline, trained = time.time() + 300, False  # a loaded machine starts slowly
        while time.time() < deadline and process.poll() is None:
            running = _running_run(tmp_path)
            if running and len(logged_epochs(tmp_path, running)) >= 2:
                trained = True
                break
            time.sleep(0.2)
        assert trained, "the run never logged two epochs: nothing to interrupt"
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    return process.returncode, stderr, shlex.join(command[2:])


def _running_run(tmp_path) -> str | None:
    """The 400-epoch run, once it is RUNNING (a sweep's parent is RUNNING too)."""
    if not (tmp_path / "mlruns" / "mlflow.db").exists():
        return None
    found = tracking.find_runs(store_for(tmp_path), {}, status="RUNNING")
    return next((r.run_id for r in found if r.params.get("train.epochs") == "400"), None)


@pytest.mark.long
@pytest.mark.parametrize(
    "signum, how, status, sweep",
    [(signal.SIGINT, "Ctrl-C", 130, False), (signal.SIGTERM, "SIGTERM", 143, True)],
)
def test_a_real_signal_to_the_command_leaves_one_line_on_stderr(
    tmp_path, signum, how, status, sweep
):
    args = ["--multirun", *SLOW[:-1], "train.epochs=1,400"] if sweep else SLOW
    code, stderr, given = interrupt_process(tmp_path, signum, *args)
    assert code == status, stderr[-3000:]
    run = killed_run(tmp_path)
    epoch = max(logged_epochs(tmp_path, run.run_id))
    assert stderr.strip().splitlines() == [the_interrupt_line(stderr)]  # nothing else
    prefix = f"sweep {run.tags['sweep.id']}: " if sweep else ""
    assert the_interrupt_line(stderr) == (
        f"Interrupted ({how}): {prefix}run {run.run_id} KILLED after epoch {epoch}/400. "
        f"Resume with: python pipelines/train.py {given}"
    )
