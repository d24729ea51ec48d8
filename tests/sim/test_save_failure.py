"""A failed save of the virtual chip is an error, never a success (issue 10): from `pyocd` on `-u f4sim`, from
`f4load --probe sim` and from `f4load-sim`, one line naming the file (sim/probe.py, sim/state.py).

The failures are real: a file-size limit on the process (RLIMIT_FSIZE, what a full disk or quota looks like
to the writer: EFBIG, "File too large" for the 512 KB flash.bin), and the state directory removed while a
session holds the chip.
"""
from __future__ import annotations

import os
import random
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from f4load import exit_status
from f4load.part import KB, SRAM_START
from f4load.sim import state as sim_state

REPO = Path(__file__).resolve().parents[2]
FILE_SIZE_LIMIT = 256 * KB  # the JSON files and the lock fit; flash.bin (512 KB) does not


def limited_file_size() -> None:
    """preexec_fn: writes past FILE_SIZE_LIMIT fail with EFBIG (CPython ignores SIGXFSZ, so it is an OSError)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def run(program: str, *args: str, state: Path, faults: str = "") -> subprocess.CompletedProcess:
    """Run `pyocd`, `f4load` or `f4load-sim` (as the console scripts do) under the file-size limit."""
    code = {"pyocd": "from pyocd.__main__ import main; sys.exit(main())",
            "f4load": "from f4load.cli import main; sys.exit(main())",
            "f4load-sim": "from f4load.sim.cli import main; sys.exit(main())"}[program]
    env = dict(os.environ, F4LOAD_SIM_STATE=str(state), F4LOAD_SIM_LINK="ideal", F4LOAD_SIM_FAULTS=faults)
    env.pop("F4LOAD_PROBE", None)
    return subprocess.run([sys.executable, "-c", f"import sys; {code}", *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=REPO, stdin=subprocess.DEVNULL, preexec_fn=limited_file_size)


def pyocd_lines(result: subprocess.CompletedProcess, level: str) -> List[str]:
    """pyocd's log lines of one level ("C" critical, "E" error)."""
    return [line for line in (result.stdout + result.stderr).splitlines() if f" {level} " in line]


@pytest.fixture
def saved_chip(sim_state_dir: Path) -> Path:
    """A factory-new chip already in its state directory (so opening it writes nothing big)."""
    sim_state.reset_state(sim_state_dir)
    return sim_state_dir


@pytest.fixture
def app(tmp_path: Path) -> Path:
    path = tmp_path / "app.bin"
    path.write_bytes(random.Random(5).randbytes(2000))
    return path


def erased(state: Path) -> bool:
    return bytes(sim_state.load_state(state).flash) == b"\xff" * (512 * KB)


# --- pyocd ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [("flash", "{app}"), ("commander", "-c", "read32 0x08000000"),
                                     ("erase", "--sector", "0x08000000")], ids=lambda c: c[0])
def test_pyocd_exits_1_naming_the_file_when_the_chip_cannot_be_saved(saved_chip, app, command):
    args = [part.format(app=app) for part in command]
    result = run("pyocd", args[0], "-u", "f4sim", *args[1:], state=saved_chip)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    (line,) = pyocd_lines(result, "C")
    assert f"cannot write {saved_chip / 'flash.bin'}: File too large" in line
    assert "the virtual chip was not saved" in line
    assert "Traceback" not in output
    assert erased(saved_chip)  # the flash the session wrote is lost, as the message says


def test_a_failed_flash_stays_the_reported_error_and_the_failed_save_is_logged_beside_it(saved_chip, app):
    result = run("pyocd", "flash", "-u", "f4sim", str(app), state=saved_chip, faults="wrp=0")
    assert result.returncode == 1
    (critical,) = pyocd_lines(result, "C")
    assert "EraseSector failed on sector 0" in critical
    (error,) = pyocd_lines(result, "E")
    assert f"cannot write {saved_chip / 'flash.bin'}: File too large" in error


def test_a_state_directory_removed_during_the_session_fails_the_close(open_session, sim_state_dir):
    session = open_session()
    session.target.write32(SRAM_START, 0x1234_5678)
    shutil.rmtree(sim_state_dir)
    with pytest.raises(sim_state.SimSaveError) as failure:
        session.close()
    message = str(failure.value)
    assert message.startswith(f"f4sim: cannot write {sim_state_dir / 'options.json'}: No such file or directory")
    assert "\n" not in message
    assert failure.value.exit_code == exit_status.PROBE  # what `f4load` maps it to


# --- f4load-sim --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [("reset",), ("fault", "wrp=3"), ("fault", "--clear")], ids=" ".join)
def test_f4load_sim_exits_1_naming_the_file_it_could_not_write(saved_chip, command):
    result = run("f4load-sim", *command, state=saved_chip)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr == f"f4load-sim: error: cannot write {saved_chip / 'flash.bin'}: File too large\n"


# --- f4load --------------------------------------------------------------------------------------------------
def test_f4load_exits_with_the_probe_status_naming_the_file(saved_chip, app):
    result = run("f4load", "--probe", "sim", str(app), "-q", state=saved_chip)
    assert result.returncode == exit_status.PROBE, result.stderr
    assert result.stderr.count("\n") == 1 and f"cannot write {saved_chip / 'flash.bin'}" in result.stderr
    assert erased(saved_chip)
