"""The command line: one clear line for a user's mistake, and fast answers that load nothing."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY
from vaelab.edges.cli import RAW_STDERR

_PROBE = """
import runpy, sys
sys.argv = sys.argv[1:]
import atexit

HEAVY = ("tensorflow", "keras", "jax", "mlflow")


def report():  # exit handlers run even on the command's fast exit
    print("LOADED", sorted(m for m in HEAVY if m in sys.modules), flush=True)


atexit.register(report)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize(
    "script, args",
    [
        ("train.py", ["--help"]),
        ("train.py", ["--cfg", "job"]),
        ("rerun.py", ["--help"]),
        ("rerun.py", ["--cfg", "job"]),
    ],
)
def test_help_and_the_composed_config_load_no_framework(script, args):
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(REPO / "pipelines" / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == "LOADED []"
    assert ("run_id" if script == "rerun.py" else "model") in result.stdout


@pytest.mark.parametrize(
    "script, accepted, refused, example",
    [
        ("train.py", ["model.latent_dim=32", "style: custom_loop, [functional], subclass",
                      "sweep (with --multirun): demo, grid, optuna"], [], "--multirun sweep=grid"),
        ("report.py", ["sweep_id=null", "metric=val/total", "top_k=3", "tracking: [local]"],
         ["style:", "model.", "loss:"], "report.py sweep_id=<id>"),
        ("rerun.py", ["run_id=null", "strict=", "tracking: [local]"], ["style:", "model."],
         "rerun.py run_id=<id>"),
    ],
)  # fmt: skip
def test_each_help_lists_what_its_command_accepts_a_line_per_key_and_examples(
    script, accepted, refused, example
):
    result = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / script), "--help"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    text = result.stdout
    assert all(line in text for line in accepted), text
    assert not any(line in text for line in refused), text
    examples = text.split("Examples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(examples) >= 2 and any(example in line for line in examples), examples
    keys = [line for line in text.splitlines() if re.match(r"  [\w.]+=", line)]
    assert len(keys) >= 10 and all(len(line) <= 100 for line in keys)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.latent_dim=0", "Error: model.latent_dim=0 is invalid: expected an integer >= 1"),
        ("objective=test/total", "Error: objective='test/total': tuning on the test set"),
        ("paths.mnist_source=/nonexistent", "Error: paths.mnist_source='/nonexistent' does not"),
    ],
)
def test_a_users_mistake_is_one_line_and_exit_1(run_app, override, message, tmp_path):
    result = run_app("train.py", override)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error")]
    assert line.startswith(message)
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # nothing was recorded


# What TensorFlow 2.21 writes at start-up on this machine, whatever TF_CPP_MIN_LOG_LEVEL says.
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796147894.596991   15126 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors",
    "I1201 17:46:30.123456   15126 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
]
KEPT = [
    "W0000 00:00:1796147894.596991   15126 loader.cc:12] a real warning",
    "E1201 17:46:30.123456   15126 op.cc:9] a real error",
    "Traceback (most recent call last):",
    "[2026-12-01 17:59:32,965][vaelab.run][INFO] - Run 6013e9b7: style=functional on CPU",
]


_WRITE_LINES = """
import os, sys
from vaelab.edges import cli

cli.quiet_frameworks()  # fd 2 through the filter, as every pipeline has it
for line in sys.argv[1:]:
    os.write(2, f"{line}\\n".encode())
"""


def test_only_the_native_start_up_chatter_is_filtered():
    environment = {k: v for k, v in os.environ.items() if k != RAW_STDERR}
    written = subprocess.run(
        [sys.executable, "-c", _WRITE_LINES, *NOISE, *KEPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=environment,
    )
    assert written.stderr.splitlines() == KEPT


def pipeline(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != RAW_STDERR}
    return subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**environment, **env},
    )


def test_a_run_prints_vaelabs_own_progress_and_result_only(tmp_path):
    done = pipeline(*TINY, f"paths.store_dir={tmp_path}", f"paths.output_dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert lines, "nothing printed"
    assert all("][vaelab." in line for line in lines), "\n".join(lines)
    assert "\r" not in done.stdout + done.stderr  # no progress bar off a terminal
    assert "epoch 1/1" in lines[-2] and " FINISHED: val/total " in lines[-1]


def test_a_mistake_on_the_command_line_is_one_line_unless_the_full_error_is_asked_for():
    refused = pipeline("model.latent_dim=0")
    assert refused.returncode == 1
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("Error: model.latent_dim=0 is invalid")
    traced = pipeline("model.latent_dim=0", HYDRA_FULL_ERROR="1")
    assert traced.returncode == 1 and "Traceback (most recent call last)" in traced.stderr


LAST_WORDS = "F1204 12:00:00.000000   15126 kernel.cc:7] Check failed: the last words"
_CRASH = f"""
import os
from vaelab.edges import cli

cli.quiet_frameworks()  # fd 2 through the filter, as every pipeline has it
for i in range(3000):  # a burst of native lines, noise and not, then an abort in native code
    os.write(2, b"I0000 00:00:1796147894.596991   15126 port.cc:153] start-up noise\\n")
    os.write(2, f"native line {{i}}\\n".encode())
os.write(2, b"{LAST_WORDS}\\n")
os.abort()
"""


def test_the_last_lines_of_a_native_crash_reach_the_terminal_and_the_noise_does_not():
    environment = {k: v for k, v in os.environ.items() if k != RAW_STDERR}
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASH], capture_output=True, text=True, timeout=60, env=environment
    )
    assert crashed.returncode == -6  # SIGABRT
    lines = crashed.stderr.splitlines()
    assert lines[-2:] == ["native line 2999", LAST_WORDS]
    assert len([line for line in lines if line.startswith("native line")]) == 3000
    assert not any("start-up noise" in line for line in lines)


def _help(script: str, config_name: str) -> str:
    from vaelab.edges.help import help_text

    doc = (REPO / "pipelines" / script).read_text().split('"""')[1]
    return help_text(script, config_name, REPO / "conf", [], doc)


# Each command's presets by default: where the descriptions of its keys come from.
DEFAULTS = {
    "config": {"style": "functional", "model": "dense", "loss": "elbo", "data": "mnist",
               "train": "default", "eval": "default", "pruning": "default"},
    "report": {},
}  # fmt: skip


@pytest.mark.parametrize("width", [60, 100, 160])
@pytest.mark.parametrize("script, config_name", [("train.py", "config"), ("report.py", "report")])
def test_help_wraps_every_description_whole_at_the_terminals_width(
    monkeypatch, width, script, config_name
):
    from vaelab.edges.help import key_docs

    monkeypatch.setenv("COLUMNS", str(width))  # what shutil.get_terminal_size reads first
    text = _help(script, config_name)
    settings = text.split("Settings (", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    described = [line for line in settings if len(line.split()) > 1]
    assert described and all(len(line) <= width for line in described), (width, described)
    flowing = " ".join(text.split())
    choices = {"tracking": "local", "paths": "default", **DEFAULTS[config_name]}
    docs = key_docs(REPO / "conf", config_name, choices)
    assert len(docs) >= 10
    assert all(" ".join(doc.split()) in flowing for doc in docs.values())  # none cut
    assert not [line for line in described if line.endswith("...")]


def test_help_off_a_terminal_is_100_columns(monkeypatch):
    from vaelab.edges.help import terminal_width

    monkeypatch.delenv("COLUMNS", raising=False)
    assert terminal_width() == 100  # pytest's stdout is not a terminal


def test_report_help_keeps_its_examples_after_e_g(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text = _help("report.py", "report")
    assert "Run ids to compare instead of a sweep, e.g. runs=[<id>,<id>]" in text
    assert "e.g. filter=\"params.`style.name` = 'subclass'\"" in text


def test_rerun_help_describes_each_of_its_own_keys(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    lines = {
        line.split("=", 1)[0].strip(): line for line in _help("rerun.py", "rerun").splitlines()
    }
    for key, words in [
        ("run_id", "The run to re-create"),
        ("sweep_id", "The sweep whose every run is re-created"),
        ("strict", "Refuse to rerun when the code version"),
        ("experiment_name", "The MLflow experiment"),
    ]:
        assert words in lines[key], lines[key]
