"""run_stage: one line on stderr and exit 1; the traceback with REFINER_DEBUG=1; 130 on Ctrl-C."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from refiner.core.config import ConfigError
from refiner.core.errors import run_stage

ROOT = Path(__file__).resolve().parents[1]


def _fail() -> None:
    raise ConfigError("params.yaml: train.lr = 'abc' is invalid;\n allowed: number in (0, 1)")


def test_error_is_one_line_and_exit_status_1(capsys, monkeypatch):
    monkeypatch.delenv("REFINER_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        run_stage(_fail)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err == "error: params.yaml: train.lr = 'abc' is invalid; allowed: number in (0, 1)\n"


def test_debug_prints_the_traceback(capsys, monkeypatch):
    monkeypatch.setenv("REFINER_DEBUG", "1")
    with pytest.raises(SystemExit) as e:
        run_stage(_fail)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError" in err and "_fail" in err


def test_success_returns_and_interrupt_exits_130(capsys):
    assert run_stage(lambda: 42) is None

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as e:
        run_stage(interrupted)
    assert e.value.code == 130 and capsys.readouterr().err == "error: interrupted\n"


def test_in_a_subprocess():
    code = (
        "from refiner.core.errors import run_stage\n"
        "def main():\n    raise FileNotFoundError('data/x.zarr: not found')\n"
        "run_stage(main)"
    )
    env = {k: v for k, v in os.environ.items() if k != "REFINER_DEBUG"}
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "error: data/x.zarr: not found\n")


def test_a_stage_script_given_an_option_prints_its_doc_and_writes_nothing(tmp_path):
    """`python stages/shards.py --help` once wrote its output into a folder named --help."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, str(ROOT / "stages/shards.py"), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Stage shards" in r.stderr and "take no options" in r.stderr
    assert list(tmp_path.iterdir()) == []
