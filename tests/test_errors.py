"""A user's mistake is one line naming the key and the fix, from the command line (exit 1)
and, word for word, from the Python interface (ConfigError): Hydra's composition errors
(a typo'd key, a wrong type, an unknown preset) and a VAELAB_HOME nothing can be written to."""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import vaelab
from tests.conftest import REPO
from vaelab.vocab.errors import ConfigError

# (script, override, the message's start): each names the key, what it accepts, the fix.
MISTAKES = [
    ("train.py", "model.latnt_dim=8",
     "model.latnt_dim is not a vaelab setting. Did you mean model.latent_dim? Remove it or fix "
     "its name"),
    ("train.py", "stle=functional", "stle is not a vaelab setting. Did you mean style?"),
    ("train.py", "style=functonal",
     "style=functonal is not a preset of style. Did you mean style=functional? The choices: "
     "custom_loop, functional, subclass."),
    ("train.py", "hydra/launcher=packd",
     "hydra/launcher=packd is not a preset of hydra/launcher. Did you mean "
     "hydra/launcher=packed? The choices: "),
    ("train.py", "model.latent_dim=abc",
     "model.latent_dim='abc' is invalid: expected an integer. Fix it on the command line"),
    ("train.py", "train.learning_rate=fast", "train.learning_rate='fast' is invalid: expected a "
     "number."),
    ("train.py", "train.shuffle=maybe", "train.shuffle='maybe' is invalid: expected true or "
     "false."),
    ("train.py", "data.train_limit=all",
     "data.train_limit='all' is invalid: expected null or an integer."),
    ("train.py", "loss.reconstruction=bc",
     "loss.reconstruction='bc' is invalid: expected one of mse, bce. Did you mean "
     "loss.reconstruction=bce?"),
    ("train.py", "model.latent_dim=[1,", "cannot read the override 'model.latent_dim=[1,'"),
    ("report.py", "top_kk=3", "top_kk is not a vaelab setting. Did you mean top_k?"),
    ("rerun.py", "strict=maybe", "strict='maybe' is invalid: expected true or false."),
]  # fmt: skip


def the_error_line(result) -> str:
    """The command's one line: exit 1, no traceback, nothing else on stderr."""
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    return line.removeprefix("Error: ")


@pytest.mark.parametrize("script, override, message", MISTAKES)
def test_a_config_mistake_is_one_line_naming_the_key_and_the_fix(
    run_app, script, override, message, tmp_path
):
    line = the_error_line(run_app(script, override))
    assert line.startswith(message), line
    assert f"+{override}" not in line  # Hydra's advice for a typo would smuggle it in
    assert not (tmp_path / "mlruns").exists()  # refused before anything was recorded


def test_the_full_error_is_still_there_when_asked_for(run_app, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError, match="model.latnt_dim is not a vaelab setting"):
        run_app("train.py", "model.latnt_dim=8")


@pytest.mark.parametrize("script, override, message", [m for m in MISTAKES if m[0] == "train.py"])
def test_compose_raises_the_command_lines_message(run_app, script, override, message):
    with pytest.raises(ConfigError) as raised:
        vaelab.compose([override])
    assert str(raised.value).startswith(message)
    assert str(raised.value) == the_error_line(run_app(script, override))


def test_the_api_says_a_report_settings_mistake_the_same_way(tmp_path):
    with pytest.raises(ConfigError, match="top_kk is not a vaelab setting. Did you mean top_k?"):
        vaelab.report(store=f"sqlite:///{tmp_path}/mlflow.db", top_kk=3)


def _unwritable_directory(tmp_path: Path) -> Path:
    """A directory this process cannot create files in (root writes anywhere but on a
    read-only file system: /sys)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return locked
    try:
        tempfile.TemporaryFile(dir="/sys").close()
    except OSError:
        return Path("/sys")
    pytest.skip("no directory here refuses root's writes")


def _home(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A VAELAB_HOME that cannot be used, and the start of what the line says of it."""
    afile = tmp_path / "home.txt"
    afile.write_text("not a directory")
    if case == "a file":
        return afile, f"VAELAB_HOME={afile} is not a directory: point VAELAB_HOME at a "
    if case == "under a file":
        home = afile / "home"
        return home, f"VAELAB_HOME={home} is not a directory ({afile} is a file): point "
    home = _unwritable_directory(tmp_path)
    return home, f"VAELAB_HOME={home} is not writable ("


@pytest.mark.parametrize("case", ["a file", "under a file", "unwritable"])
def test_a_home_that_cannot_be_written_is_one_line_naming_it(run_app, monkeypatch, tmp_path, case):
    home, message = _home(tmp_path, case)
    monkeypatch.setenv("VAELAB_HOME", str(home))
    for script in ("train.py", "report.py"):
        line = the_error_line(run_app(script))
        assert line.startswith(message), line
        assert line.endswith("or unset it to use the checkout.")
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        vaelab.runs()


def test_a_home_not_made_yet_is_fine(monkeypatch, tmp_path):
    monkeypatch.setenv("VAELAB_HOME", str(tmp_path / "new" / "home"))
    config = vaelab.compose(["experiment=smoke"])
    assert config.paths.root == str(tmp_path / "new" / "home")


def test_the_real_command_prints_the_one_line_too(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "pipelines" / "train.py"), "model.latnt_dim=8"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert the_error_line(done).startswith(MISTAKES[0][2])
