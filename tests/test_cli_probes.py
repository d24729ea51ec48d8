"""What a newcomer and a real-board user get from the command line: probe choice, global options anywhere, clean
machine-readable output, exit codes that gate a production line, several files and several boards at once.

Real processes (`python -m f4load`) where the process is the point (stdout must hold exactly one JSON document,
workers per board, start-up imports); click's CliRunner elsewhere. What ends up in flash is read from the
virtual chip's saved state, never through f4load.
"""
from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import pytest
from click.testing import CliRunner, Result

from f4load import boards, exit_status
from f4load.cli import Settings, cli
from f4load.part import FLASH_START, KB
from f4load.sim import faults
from f4load.sim.state import board_dir, load_state

REPO = Path(__file__).resolve().parent.parent


def f4load(*args: object, env: Optional[Dict[str, str]] = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, env=env)


def run(*args: object, env: Optional[Dict[str, str]] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m f4load ARGS` as a user runs it (no terminal, no standard input)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "f4load", *map(str, args)], env=full_env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=REPO)


def app(tmp_path: Path, size: int = 20_000, seed: int = 1, name: str = "app.bin") -> Path:
    path = tmp_path / name
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def flash(state: Path, address: int = FLASH_START, size: int = 64 * KB) -> bytes:
    offset = address - FLASH_START
    return bytes(load_state(state, use_environment=False).flash[offset:offset + size])


# --- the probe is chosen as pyocd, probe-rs and esptool choose it -------------------------------------------

def test_with_no_probe_attached_and_none_chosen_nothing_is_programmed_and_sim_is_named(
        sim_state_dir: Path, tmp_path: Path) -> None:
    """The virtual chip is never chosen silently: a board user must not get "verified" from a simulation."""
    result = run(app(tmp_path), env={"F4LOAD_SIM_LINK": "ideal"})
    assert result.returncode == exit_status.PROBE
    assert "no debug probe found" in result.stderr and "--probe sim" in result.stderr
    assert "f4load probes" in result.stderr  # the attached-probe check
    assert result.stdout == ""
    assert not (sim_state_dir / "flash.bin").exists()  # the virtual chip was never even opened


def test_f4load_probe_in_the_environment_sets_the_default(sim_state_dir: Path, tmp_path: Path) -> None:
    image = app(tmp_path)
    result = run(image, "-q", env={"F4LOAD_PROBE": "sim", "F4LOAD_SIM_LINK": "ideal"})
    assert result.returncode == 0, result.stderr
    assert flash(sim_state_dir, size=20_000) == image.read_bytes()


def test_an_unknown_probe_is_exit_3_naming_what_is_attached(chip: Path) -> None:
    result = f4load("info", "--probe", "nosuch")
    assert result.exit_code == exit_status.PROBE
    assert "no debug probe matches 'nosuch' (no probe is attached)" in result.stderr


def test_probes_lists_real_probes_and_says_how_to_reach_the_virtual_chip(sim_state_dir: Path) -> None:
    result = run("probes")
    assert result.returncode == 0
    assert "no debug probe attached" in result.stdout and "--probe sim" in result.stdout
    listed = json.loads(run("probes", "--json").stdout)
    assert listed["probes"] == [] and listed["virtual"]["probe"] == "sim"


def test_every_summary_line_names_the_probe(chip: Path, tmp_path: Path) -> None:
    result = f4load(app(tmp_path), "--probe", "sim")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("[virtual STM32F407 (sim)] ")
    report = json.loads(f4load("info", "--json").stdout)
    assert report["probe"] == {"requested": "sim", "uid": "f4sim", "description": "virtual STM32F407 (sim)"}


# --- global options before or after the command name ----------------------------------------------------------

@pytest.mark.parametrize("args", [("--probe", "sim", "-v", "info"), ("info", "--probe", "sim", "-v"),
                                  ("-v", "info", "--probe", "sim"), ("--json", "info"), ("info", "--json")])
def test_global_options_work_before_and_after_the_command(chip: Path, args: tuple) -> None:
    result = f4load(*args)
    assert result.exit_code == 0, result.output
    if "--json" in args:
        assert json.loads(result.stdout)["command"] == "info"
    else:
        assert result.stdout.startswith("probe        virtual STM32F407 (sim)")


def test_a_file_named_like_a_command_is_reached_with_program(chip: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    image = app(tmp_path, name="info")
    result = f4load("program", "info", "--format", "bin")
    assert result.exit_code == 0, result.output
    assert flash(chip, size=20_000) == image.read_bytes()
    assert f4load("info").stdout.startswith("probe")  # and `f4load info` is still the command


def test_options_after_the_command_win_and_probes_and_verbosity_add_up() -> None:
    merged = Settings.merge({"probe": ("sim:a",), "connect": "halt", "verbose": 1, "as_json": True},
                            {"probe": ("sim:b",), "connect": "attach", "verbose": 2, "as_json": None})
    assert merged.probes == ["sim:a", "sim:b"] and merged.connect == "attach"
    assert merged.verbose == 3 and merged.as_json


# --- one JSON document on stdout, whatever happens -------------------------------------------------------------

@pytest.mark.parametrize("args, code", [
    (("--json", "info", "--probe", "nosuch"), exit_status.PROBE),
    (("--json", "info", "--no-such-option"), exit_status.USAGE),
    (("--json", "missing.bin", "--probe", "sim"), exit_status.USAGE),
    (("--json", "info", "--probe", "sim"), exit_status.OK),
])
def test_json_stdout_is_exactly_one_document_in_every_outcome(sim_state_dir: Path, args: tuple, code: int) -> None:
    result = run(*args, env={"NO_COLOR": ""})
    assert result.returncode == code, result.stderr
    document = json.loads(result.stdout)  # the whole of stdout, nothing before or after
    assert document["exit_code"] == code and (document["result"] == "ok") == (code == 0)
    assert "\x1b[" not in result.stdout + result.stderr  # no colour: stderr is not a terminal
    if code:
        assert document["error"]["message"] and result.stderr.startswith("f4load: error: ")


# --- exit codes that gate a production line --------------------------------------------------------------------

def test_declining_the_rdp_prompt_has_its_own_exit_status_and_changes_nothing(chip: Path) -> None:
    faults.inject(str(chip), "rdp1")
    result = CliRunner().invoke(cli, ["rdp", "0"], input="n\n", catch_exceptions=False)
    assert result.exit_code == exit_status.DECLINED, result.output
    assert "declined: nothing was done" in result.stderr
    assert load_state(chip, use_environment=False).options.rdp_level == 1


def test_every_exit_status_is_in_the_help_and_in_the_docs() -> None:
    help_text = f4load("--help").stdout
    docs = (REPO / "docs" / "cli.md").read_text()
    for code in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 130):
        assert re.search(rf"^\s+{code}\s+\w", help_text, re.MULTILINE), code
        assert f"| {code} |" in docs, code


# --- CLI completeness ------------------------------------------------------------------------------------------

def test_several_files_are_programmed_in_one_run(chip: Path, tmp_path: Path) -> None:
    boot, application = app(tmp_path, 3000, seed=5, name="boot.bin"), app(tmp_path, 5000, seed=6)
    result = f4load(boot, f"{application}@0x08008000")
    assert result.exit_code == 0, result.output
    assert flash(chip, FLASH_START, 3000) == boot.read_bytes()
    assert flash(chip, 0x0800_8000, 5000) == application.read_bytes()


def test_overlapping_files_are_refused_before_anything_is_erased(chip: Path, tmp_path: Path) -> None:
    old = app(tmp_path, 32 * KB, seed=7, name="old.bin")
    assert f4load(old).exit_code == 0
    result = f4load(app(tmp_path, 3000, seed=8, name="boot.bin"), f"{app(tmp_path, 5000, seed=9)}@0x08000800")
    assert result.exit_code == exit_status.USAGE
    assert "overlaps" in result.stderr and "0x08000800" in result.stderr
    assert flash(chip, size=32 * KB) == old.read_bytes()


def test_reset_lets_the_application_run_or_halts_it(chip: Path) -> None:
    running = json.loads(f4load("reset", "--json").stdout)
    assert running["result"] == "ok" and running["details"] == {"halt": False, "halted": False}
    halted = json.loads(f4load("reset", "--halt", "--json").stdout)
    assert halted["details"]["halted"] is True and isinstance(halted["details"]["pc"], int)


def test_frequency_sets_the_swd_clock_that_the_virtual_link_charges(chip: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An ST-Link takes its fastest SWD step at or below the request; the data phase is charged at that clock."""
    monkeypatch.setenv("F4LOAD_SIM_LINK", "stlink-v2")
    image = app(tmp_path, 64 * KB)
    times = {}
    for hz in ("4M", "1M"):
        f4load("erase", "0-1", "-q")
        report = json.loads(f4load(image, "--frequency", hz, "--json", "--no-verify").stdout)
        times[hz] = report["time"]["work_virtual_s"]
    assert times["1M"] > times["4M"]
    assert f4load("info", "--frequency", "fast").exit_code == exit_status.USAGE


def test_verify_and_no_verify(chip: Path, tmp_path: Path) -> None:
    image = app(tmp_path)
    assert json.loads(f4load(image, "--no-verify", "--json").stdout)["verified"] is None
    assert json.loads(f4load(image, "--verify", "--json").stdout)["verified"] is True


def test_shell_completion_script_and_completion_of_commands(sim_state_dir: Path) -> None:
    script = run(env={"_F4LOAD_COMPLETE": "bash_source"})
    assert script.returncode == 0 and "_f4load_completion" in script.stdout
    words = run(env={"_F4LOAD_COMPLETE": "bash_complete", "COMP_WORDS": "f4load dia", "COMP_CWORD": "1"})
    assert "diagnose" in words.stdout


# --- start-up ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [("--help",), ("--version",), ("program", "--help")])
def test_help_and_version_do_not_import_pyocd_or_unicorn(args: tuple) -> None:
    code = (f"import sys; from f4load.cli import main; status = main({list(args)!r}); "
            "print(sorted(m for m in ('pyocd', 'unicorn', 'cffi', 'bincopy') if m in sys.modules)); "
            "sys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


# --- several boards at once --------------------------------------------------------------------------------

def test_two_virtual_boards_are_programmed_in_parallel_each_with_its_line(sim_state_dir: Path,
                                                                           tmp_path: Path) -> None:
    image = app(tmp_path)
    result = run(image, "--probe", "sim:a", "--probe", "sim:b", env={"F4LOAD_SIM_LINK": "ideal"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[-1] == "2 boards: 2 ok"
    unique_ids = {load_state(board_dir(name), use_environment=False).unique_id.hex() for name in "ab"}
    assert len(unique_ids) == 2
    for uid in unique_ids:
        assert sum(uid in line for line in lines) == 1
    for name in "ab":
        assert flash(board_dir(name), size=20_000) == image.read_bytes()


def test_a_board_that_fails_is_named_and_makes_the_exit_status_non_zero(sim_state_dir: Path,
                                                                         tmp_path: Path) -> None:
    faults.inject(str(board_dir("b")), "wrp=0-3")
    image = app(tmp_path)
    result = run(image, "--probe", "sim:a", "--probe", "sim:b", env={"F4LOAD_SIM_LINK": "ideal"})
    assert result.returncode == exit_status.FLASH
    assert "failed: virtual STM32F407 (sim:b) (exit 1)" in result.stdout
    assert any(line.startswith("[virtual STM32F407 (sim:b)") and "write-protected" in line
               for line in result.stdout.splitlines())
    assert flash(board_dir("a"), size=20_000) == image.read_bytes()
    document = json.loads(run(image, "--json", "--probe", "sim:a", "--probe", "sim:b",
                              env={"F4LOAD_SIM_LINK": "ideal"}).stdout)
    assert document["failed"] == ["f4sim:b"] and set(document["boards"]) == {"f4sim:a", "f4sim:b"}
    assert document["boards"]["f4sim:b"]["target"]["unique_id"] != document["boards"]["f4sim:a"]["target"]["unique_id"]


def test_the_overall_status_of_several_boards() -> None:
    assert boards.overall_status([0, 0]) == 0
    assert boards.overall_status([0, 1, 1]) == 1
    assert boards.overall_status([1, 4]) == exit_status.BOARDS_FAILED


def test_each_worker_gets_the_command_line_with_its_own_probe() -> None:
    argv = ["--probe", "sim:a", "app.bin", "--probe=sim:b", "-v", "--", "--odd-name.bin"]
    assert boards.worker_argv(argv, "sim:b") == ["app.bin", "-v", "--probe", "sim:b", "--json", "--",
                                                 "--odd-name.bin"]


def test_read_refuses_several_boards(chip: Path, tmp_path: Path) -> None:
    result = f4load("read", "0x08000000", "16", tmp_path / "out.bin", "--probe", "sim:a", "--probe", "sim:b")
    assert result.exit_code == exit_status.USAGE
    assert "read writes one file" in result.stderr


def test_ctrl_c_reaches_every_board_and_each_is_reported(sim_state_dir: Path, tmp_path: Path) -> None:
    """The parent passes the interrupt on to every worker once; each stops at a safe point; both are listed."""
    image = app(tmp_path, 512 * KB, seed=12)
    env = dict(os.environ, F4LOAD_SIM_LINK="stlink-v2")
    job = subprocess.Popen([sys.executable, "-m", "f4load", str(image), "--probe", "sim:a", "--probe", "sim:b"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           stdin=subprocess.DEVNULL, cwd=REPO)
    time.sleep(1.5)  # a 512 KB job takes seconds of wall time: the workers are starting or at work
    job.send_signal(signal.SIGINT)
    stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == exit_status.INTERRUPTED, stdout + stderr
    lines = stdout.splitlines()
    assert lines[-1].startswith("2 boards: ") and "Traceback" not in stderr
    for name in "ab":
        assert any(line.startswith(f"[virtual STM32F407 (sim:{name})") and "(exit 130)" in line for line in lines)
