"""The Python API (`import f4load`, docs/api.md) and the production-line example built on it."""
from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import f4load
from f4load.sim import faults
from f4load.sim.state import board_dir, load_state

REPO = Path(__file__).resolve().parent.parent


def app(tmp_path: Path, size: int = 20_000, seed: int = 11) -> Path:
    path = tmp_path / "app.bin"
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def test_program_returns_a_result_that_prints_in_one_line(sim_state_dir: Path, tmp_path: Path) -> None:
    image = app(tmp_path)
    result = f4load.program(image, probe="sim", sim_link="ideal")
    assert str(result) == (f"[virtual STM32F407 (sim)] STM32F407VE {result.unique_id}: "
                           "programmed 20,000 bytes, verified")
    assert result.unique_id == load_state(sim_state_dir, use_environment=False).unique_id.hex()
    assert "plan" not in repr(result) and len(repr(result)) < 400  # no 500-line plan in a repr
    assert bytes(load_state(sim_state_dir, use_environment=False).flash[:20_000]) == image.read_bytes()


def test_verify_and_erase_and_several_files(sim_state_dir: Path, tmp_path: Path) -> None:
    image = app(tmp_path)
    f4load.program([f"{image}@0x08004000"], probe="sim", sim_link="ideal")
    assert f4load.verify(f"{image}@0x08004000", probe="sim", sim_link="ideal").outcome.verified
    with pytest.raises(f4load.VerifyError) as failure:
        f4load.verify(image, probe="sim", sim_link="ideal")  # at 0x08000000: not what the flash holds
    assert failure.value.exit_code == f4load.exit_status.VERIFY
    erased = f4load.erase([1, 2], probe="sim", sim_link="ideal")
    assert [s.index for s in erased.outcome.erased] == [1, 2]
    assert bytes(load_state(sim_state_dir, use_environment=False).flash[0x4000:0x4000 + 100]) == b"\xff" * 100


def test_errors_carry_the_command_lines_exit_status(sim_state_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(f4load.ImageError) as bad_file:
        f4load.program(tmp_path / "none.bin", probe="sim")
    assert bad_file.value.exit_code == f4load.exit_status.USAGE
    with pytest.raises(f4load.ConnectError) as no_probe:
        f4load.program(app(tmp_path), probe="auto")
    assert no_probe.value.exit_code == f4load.exit_status.PROBE and "--probe sim" in str(no_probe.value)


def test_session_info_gives_the_unique_id_as_hex(sim_state_dir: Path) -> None:
    with f4load.Session(probe="sim", sim_link="ideal") as session:
        assert session.info is not None
        assert session.info.unique_id == "35001f000731304d49533446"
        assert session.info.unique_id_bytes == bytes.fromhex(session.info.unique_id)


def test_import_f4load_loads_nothing_heavy_until_a_name_is_used() -> None:
    code = ("import sys, f4load; heavy = [m for m in ('pyocd', 'unicorn', 'cffi') if m in sys.modules]; "
            "f4load.Session; print(heavy, 'pyocd' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    assert out == "[] True"


def test_the_production_line_example_logs_serial_numbers_and_fails_for_a_bad_board(
        sim_state_dir: Path, tmp_path: Path) -> None:
    faults.inject(str(board_dir("b")), "wrp=0-3")
    image, log = app(tmp_path), tmp_path / "line.csv"
    env = dict(os.environ, F4LOAD_SIM_LINK="ideal")
    result = subprocess.run([sys.executable, str(REPO / "examples" / "production_line.py"), str(image),
                             "--probe", "sim:a", "--probe", "sim:b", "--probe", "sim:c", "--log", str(log)],
                            env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == f4load.exit_status.FLASH, result.stderr
    rows = list(csv.DictReader(log.open()))
    assert [r["result"] for r in rows] == ["passed", "failed", "passed"]
    assert len({r["unique_id"] for r in rows}) == 3 and all(len(r["unique_id"]) == 24 for r in rows)
    assert rows[1]["exit_status"] == "1" and "write-protected" in rows[1]["message"]
    for name in "ac":
        flash = load_state(board_dir(name), use_environment=False).flash
        assert bytes(flash[:20_000]) == image.read_bytes()
    assert load_state(board_dir("b"), use_environment=False).flash[:16] == b"\xff" * 16
