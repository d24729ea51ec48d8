"""The virtual STM32F407 persists in a state directory: between processes, safely, and with clear errors.

Scenarios that involve a second process run one (`python -c` or the `f4load-sim` command line), as two
consecutive pyocd commands would.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import platformdirs
import pytest

from f4load.part import KB
from f4load.sim import state as sim_state
from f4load.sim.faults import Faults
from f4load.sim.state import ChipState, SimStateError, load_state, lock_state, reset_state, save_state

REPO = Path(__file__).resolve().parents[2]
FACTORY_OPTCR = 0x0FFF_AAEC


def python(code: str, *args: str, env: Optional[Dict[str, str]] = None, **popen: object) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("F4LOAD_SIM_")}
    environment.update(env or {})
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=environment,
                            text=True, cwd=REPO, **popen)  # type: ignore[call-overload]


def run_python(code: str, *args: str, env: Optional[Dict[str, str]] = None) -> str:
    child = python(code, *args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    return out


def run_cli(*args: str, state: Path, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("F4LOAD_SIM_")}
    environment["F4LOAD_SIM_STATE"] = str(state)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "f4load.sim.cli", *args], env=environment,
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def assert_one_line_state_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """The command failed with exit status 1 and one line on stderr holding every needle, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("f4load-sim: error: ")
    for needle in needles:
        assert needle in lines[0]


# --- a fresh chip ---------------------------------------------------------------------------------------
def test_empty_directory_is_a_factory_new_chip(sim_state_dir: Path) -> None:
    sim_state_dir.mkdir()
    chip = load_state()
    assert chip.flash == b"\xff" * (512 * KB)
    assert chip.options.optcr == FACTORY_OPTCR
    assert chip.options.otp == b"\xff" * 528
    assert chip.unique_id == sim_state.DEFAULT_UNIQUE_ID
    assert chip.faults == Faults()


def test_missing_directory_is_created_and_holds_a_factory_new_chip(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "b"
    chip = load_state(directory)
    assert directory.is_dir()
    assert chip.flash == b"\xff" * (512 * KB) and chip.options.optcr == FACTORY_OPTCR


def test_default_directory_is_the_user_cache_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("F4LOAD_SIM_STATE", raising=False)
    assert sim_state.state_dir() == Path(platformdirs.user_cache_dir("f4load")) / "sim"


def test_environment_variable_selects_the_directory(sim_state_dir: Path) -> None:
    assert sim_state.state_dir() == sim_state_dir


# --- persistence ----------------------------------------------------------------------------------------
def test_save_then_load_gives_back_flash_option_bytes_otp_and_unique_id(sim_state_dir: Path) -> None:
    chip = load_state()
    chip.flash[0x1234:0x1238] = b"\x01\x02\x03\x04"
    chip.options.optcr = 0x0FFF_AAE0  # BOR level 3
    chip.options.otp[0:2] = b"\x00\x11"
    chip.unique_id = bytes(range(12))
    save_state(chip)
    again = load_state()
    assert again.flash == chip.flash
    assert again.options.optcr == 0x0FFF_AAE0
    assert again.options.otp[0:2] == b"\x00\x11"
    assert again.unique_id == bytes(range(12))
    assert sorted(p.name for p in sim_state_dir.iterdir()) == ["flash.bin", "lock", "options.json", "state.json"]


def test_two_consecutive_processes_see_the_same_chip(sim_state_dir: Path) -> None:
    env = {"F4LOAD_SIM_STATE": str(sim_state_dir)}
    run_python("""
        from f4load.sim.state import load_state, save_state
        chip = load_state()
        chip.flash[0x4000:0x4008] = b"firmware"
        chip.options.optcr &= ~(1 << 16)  # nWRP0 = 0
        save_state(chip)
    """, env=env)
    out = run_python("""
        from f4load.sim.state import load_state
        chip = load_state()
        print(bytes(chip.flash[0x4000:0x4008]).decode(), hex(chip.options.optcr))
    """, env=env)
    assert out.split() == ["firmware", hex(FACTORY_OPTCR & ~(1 << 16))]


def test_a_save_killed_midway_leaves_each_file_old_or_new(tmp_path: Path) -> None:
    """A process killed while it writes flash.bin (its temporary file exists) leaves a loadable chip whose
    flash is entirely one of the two images; the next save removes the leftover temporary file."""
    directory = tmp_path / "chip"
    saver = python("""
        import sys
        from f4load.sim.state import ChipState, save_state
        images = [ChipState(), ChipState()]
        images[0].flash[:] = b"\\xaa" * len(images[0].flash)
        images[1].flash[:] = b"\\x55" * len(images[1].flash)
        n = 0
        while True:
            save_state(images[n % 2], sys.argv[1])
            n += 1
    """, str(directory))
    temporary = directory / f".flash.bin.tmp-{saver.pid}"
    try:
        deadline = time.monotonic() + 20
        while not (temporary.exists() and (directory / "state.json").exists()):
            assert time.monotonic() < deadline, "the saver never started writing flash.bin"
            assert saver.poll() is None, "the saver died"
        saver.send_signal(signal.SIGKILL)
    finally:
        saver.kill()
        saver.wait(timeout=10)
    chip = load_state(directory)
    assert chip.flash in (b"\xaa" * (512 * KB), b"\x55" * (512 * KB))
    save_state(chip, directory)
    assert not list(directory.glob(".*.tmp-*"))


def test_reset_state_makes_a_factory_new_chip_and_keeps_other_files(sim_state_dir: Path) -> None:
    chip = load_state()
    chip.flash[:] = bytes(len(chip.flash))
    chip.options.optcr = 0
    save_state(chip)
    (sim_state_dir / "notes.txt").write_text("mine")
    reset_state()
    fresh = load_state()
    assert fresh.flash == b"\xff" * (512 * KB)
    assert fresh.options.optcr == FACTORY_OPTCR
    assert fresh.faults == Faults()
    assert (sim_state_dir / "notes.txt").read_text() == "mine"


def test_save_does_not_write_faults(sim_state_dir: Path) -> None:
    """Faults change only through inject/clear/reset: a chip saved with other faults leaves faults.json."""
    sim_state.save_faults(Faults(clone=True))
    chip = load_state()
    chip.faults = Faults(bsy_stuck=True)
    save_state(chip)
    assert load_state().faults == Faults(clone=True)


# --- F4LOAD_SIM_FAULTS ----------------------------------------------------------------------------------
def test_environment_faults_add_to_the_stored_ones_and_are_never_written(
        sim_state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sim_state.save_faults(Faults(iwdg_timeout_ms=5.0))
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", "bsy-stuck; vdd=2.5")
    chip = load_state()
    assert chip.faults == Faults(iwdg_timeout_ms=5.0, bsy_stuck=True, supply_voltage=2.5)
    save_state(chip)
    assert sim_state.read_stored_faults() == Faults(iwdg_timeout_ms=5.0)
    assert load_state(use_environment=False).faults == Faults(iwdg_timeout_ms=5.0)


def test_environment_option_byte_faults_show_in_the_option_bytes(
        sim_state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", "wrp=1 rdp1")
    chip = load_state()
    assert chip.options.write_protected_sectors == [1]
    assert chip.options.rdp_level == 1


def test_environment_flash_size_gives_a_bigger_part_with_the_same_image(
        sim_state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chip = load_state()
    chip.flash[0:4] = b"\x00\x00\x00\x00"
    save_state(chip)
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", "flash=1024")
    bigger = load_state()
    assert len(bigger.flash) == 1024 * KB
    assert bigger.flash[0:5] == b"\x00\x00\x00\x00\xff"
    assert bigger.flash[512 * KB:] == b"\xff" * (512 * KB)


# --- one process at a time ------------------------------------------------------------------------------
def _hold_lock(directory: Path) -> subprocess.Popen:
    holder = python("""
        import sys, time
        from f4load.sim.state import lock_state
        lock_state(sys.argv[1])
        print("locked", flush=True)
        time.sleep(60)
    """, str(directory), stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_process_is_told_which_pid_holds_the_chip(tmp_path: Path) -> None:
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(SimStateError, match=f"the virtual chip in {tmp_path} is in use by pid {holder.pid}"):
            lock_state(tmp_path)
        with pytest.raises(SimStateError, match=f"in use by pid {holder.pid}"):
            save_state(ChipState(), tmp_path)
        assert_one_line_state_error(run_cli("fault", "rdp1", state=tmp_path), f"in use by pid {holder.pid}")
        assert run_cli("status", state=tmp_path).returncode == 0, "reading a chip in use is allowed"
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_the_chip_is_free_again_when_its_holder_dies(tmp_path: Path) -> None:
    holder = _hold_lock(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    lock = lock_state(tmp_path)
    assert (tmp_path / "lock").read_text().strip() == str(os.getpid())
    lock.release()


def test_the_holding_process_can_load_and_save_while_it_holds_the_chip(sim_state_dir: Path) -> None:
    lock = lock_state()
    try:
        chip = load_state()
        chip.flash[0] = 0
        save_state(chip)
        with pytest.raises(SimStateError, match=f"in use by pid {os.getpid()} \\(this process"):
            lock_state()  # a second session, even in the same process
        assert load_state().flash[0] == 0
    finally:
        lock.release()
    holder = _hold_lock(sim_state_dir)  # released: another process can take it
    holder.kill()
    holder.wait(timeout=10)


# --- bad state directories: one line, exit status 1, no traceback ---------------------------------------
def _populated(directory: Path) -> None:
    save_state(ChipState(), directory)


def _path_is_a_file(directory: Path) -> Path:
    directory.write_text("not a directory")
    return directory


def _parent_is_a_file(directory: Path) -> Path:
    directory.write_text("not a directory")
    return directory / "sim"


def _corrupted_options(directory: Path) -> Path:
    _populated(directory)
    (directory / "options.json").write_text("{\"optcr\": 2684, oops}")
    return directory


def _truncated_state_json(directory: Path) -> Path:
    _populated(directory)
    text = (directory / "state.json").read_text()
    (directory / "state.json").write_text(text[: len(text) // 2])
    return directory


def _short_flash(directory: Path) -> Path:
    _populated(directory)
    with open(directory / "flash.bin", "r+b") as handle:
        handle.truncate(300 * KB)
    return directory


def _future_format(directory: Path) -> Path:
    _populated(directory)
    (directory / "state.json").write_text(json.dumps({"format": 7, "unique_id": "00" * 12}))
    return directory


def _unknown_fault_in_faults_json(directory: Path) -> Path:
    _populated(directory)
    (directory / "faults.json").write_text(json.dumps({"gremlins": True}))
    return directory


def _out_of_range_fault_in_faults_json(directory: Path) -> Path:
    _populated(directory)
    (directory / "faults.json").write_text(json.dumps({"supply_voltage": 12}))
    return directory


def _missing_flash(directory: Path) -> Path:
    _populated(directory)
    (directory / "flash.bin").unlink()
    return directory


def _options_without_optcr(directory: Path) -> Path:
    _populated(directory)
    (directory / "options.json").write_text("{}")
    return directory


@pytest.mark.parametrize("make_bad, needles", [
    (_path_is_a_file, ("is a file, not a directory",)),
    (_parent_is_a_file, ("cannot create state directory", "Not a directory")),
    (_corrupted_options, ("options.json is corrupted", "line 1 column")),
    (_truncated_state_json, ("state.json is truncated",)),
    (_short_flash, ("flash.bin is 307200 bytes; a flash image must be 524288 (512 KB) or 1048576 (1 MB) bytes",)),
    (_future_format, ("state.json: state format version 7 is not supported (this f4load reads version 1)",)),
    (_unknown_fault_in_faults_json, ("faults.json: unknown fault 'gremlins'",)),
    (_out_of_range_fault_in_faults_json, ("faults.json: vdd: 12 V is outside",)),
    (_missing_flash, ("is incomplete: flash.bin is missing",)),
    (_options_without_optcr, ("options.json is corrupted: no 'optcr'",)),
], ids=lambda value: value.__name__.strip("_") if callable(value) else None)
def test_a_bad_state_directory_is_a_one_line_error(
        tmp_path: Path, make_bad: Callable[[Path], Path], needles: tuple) -> None:
    directory = make_bad(tmp_path / "chip")
    with pytest.raises(SimStateError) as caught:
        load_state(directory)
    assert "\n" not in str(caught.value)
    for command in (("status",), ("fault", "clone")):
        assert_one_line_state_error(run_cli(*command, state=directory), *needles)


def test_reset_repairs_a_corrupted_directory(tmp_path: Path) -> None:
    directory = _corrupted_options(tmp_path / "chip")
    assert run_cli("reset", state=directory).returncode == 0
    assert load_state(directory).options.optcr == FACTORY_OPTCR


def test_named_boards_have_their_own_state_and_unique_ids(sim_state_dir: Path) -> None:
    a = sim_state.load_state(sim_state.board_dir("a"))
    b = sim_state.load_state(sim_state.board_dir("b"))
    default = sim_state.load_state(sim_state.board_dir(None))
    assert sim_state.board_dir("a") == sim_state_dir / "boards" / "a"
    assert len({a.unique_id, b.unique_id, default.unique_id}) == 3
    assert default.unique_id == sim_state.DEFAULT_UNIQUE_ID
    # Stable: the same name gives the same chip identity every time, also after a reset.
    assert sim_state.reset_state(sim_state.board_dir("a")).unique_id == a.unique_id


def test_a_bad_board_name_is_one_line_error(sim_state_dir: Path) -> None:
    with pytest.raises(sim_state.SimStateError, match="virtual board name 'x/y'"):
        sim_state.board_dir("x/y")
