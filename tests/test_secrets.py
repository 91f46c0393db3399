"""No secret reaches disk: a password on the command line is refused before Hydra writes a file,
and what a command writes (Hydra's outputs, logs, the store) is its owner's only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from vaelab.edges import cli
from vaelab.edges.store_uri import credentials_refusal

PASSWORD = "S3cretPW"
URI = f"http://alice:{PASSWORD}@mlflow.example:5000"
TRACKING = "Error: tracking.uri carries credentials, which would be recorded with every run"


def files_holding(root: Path, text: str) -> list[Path]:
    """`grep -rl text root`: every file under root whose bytes hold the text."""
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """The whole VAELAB_HOME under tmp_path, so that a grep of it sees all a command wrote."""
    monkeypatch.setenv("VAELAB_HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    ("script", "args", "says"),
    [
        ("train.py", [f"tracking.uri={URI}"], TRACKING),
        ("train.py", ["--multirun", f"tracking.uri=http://a.example:5000,{URI}"], TRACKING),
        ("rerun.py", ["run_id=0123456789abcdef", f"++tracking.uri='{URI}'"], TRACKING),
        ("report.py", [f"tracking.uri={URI}"], TRACKING),
        ("train.py", [f"paths.mnist_source=https://u:{PASSWORD}@data.example/mnist"], None),
    ],
)
def test_a_password_on_the_command_line_is_refused_before_anything_is_written(
    run_app, home, script, args, says
):
    result = run_app(script, *args)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(says or f"Error: {credentials_refusal('paths.mnist_source')}"), line
    assert PASSWORD not in result.stdout + result.stderr
    assert files_holding(home, PASSWORD) == []
    assert not (home / "outputs").exists()  # Hydra never started


@pytest.mark.parametrize(
    "value",
    [
        f"'http://alice:{PASSWORD},x@h:5000'",  # a password may hold what separates a sweep
        f"choice(http://h:5000,https://tok{PASSWORD}@h2)",  # a token as the user name
        f"postgresql://vaelab:{PASSWORD}@db:5432/optuna",
    ],
)
def test_every_uri_in_a_value_is_checked(value, capsys):
    with pytest.raises(SystemExit) as refused:
        cli.refuse_credentials([f"+hydra.sweeper.storage={value}"])
    assert refused.value.code == 1
    assert capsys.readouterr().err.startswith("Error: hydra.sweeper.storage carries credentials")


def test_a_login_without_a_password_and_interpolations_pass():
    cli.refuse_credentials(
        [
            "--multirun",
            "hydra.sweeper.storage=postgresql://vaelab@127.0.0.1:5433/optuna",
            "tracking.uri=sqlite:///${paths.store_dir}/mlflow.db",
            "tracking.uri=http://127.0.0.1:5000,https://mlflow.example",
        ]
    )


def test_what_a_command_writes_is_its_owners_only(run_app, home):
    previous = os.umask(0o022)  # the usual umask: new files readable by all
    try:
        result = run_app("report.py")  # no store yet: an error, after Hydra wrote its files
        assert os.umask(0o022) == 0o022  # restored for the caller (here, the test process)
    finally:
        os.umask(previous)
    assert result.returncode == 1 and "no run store at" in result.stderr
    written = list((home / "outputs").rglob("*"))
    assert any(p.name == "config.yaml" for p in written)  # .hydra/ and the command's log
    for path in written:
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
