"""What a default run prints: vaelab's own lines, also where it logs its model."""

import os
import subprocess
import sys

from tests.conftest import REPO, TINY
from vaelab.edges.cli import RAW_STDERR

# What Keras' progress bars and TensorFlow's native log lines look like on a console.
FOREIGN = ("━", "/step", "E0000", "node_def_util")


def test_a_run_that_logs_its_model_prints_no_progress_bar_and_no_native_line(tmp_path):
    # The default logs the model: MLflow's check of its input example ran Keras' predict,
    # which printed two progress bars and tf.data's "E0000 ... node_def_util.cc" line.
    # A subprocess, as a user runs it: the native line goes to fd 2, below Python.
    environment = {k: v for k, v in os.environ.items() if k != RAW_STDERR}
    done = subprocess.run(
        [
            *(sys.executable, str(REPO / "pipelines" / "train.py"), *TINY),
            *("tracking.log_model=true", f"paths.store_dir={tmp_path}/mlruns"),
            f"paths.output_dir={tmp_path}/outputs",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=tmp_path,
        env=environment,
    )
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-3000:]
    assert " FINISHED: val/total " in console
    assert not [mark for mark in FOREIGN if mark in console], console
    lines = console.strip().splitlines()
    assert all("][vaelab." in line for line in lines), console
    assert list((tmp_path / "mlruns" / "artifacts").glob("models/*/artifacts/MLmodel"))
