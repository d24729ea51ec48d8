"""A job cut short — the chip reset by a brown-out mid-erase, or the probe's link lost mid-stream — is reported as
such, never as success, and once the cause is gone a second run of the same command completes the job.

The real `f4load` program runs as a subprocess against a virtual chip of its own; what the flash holds afterwards
is read from the chip's saved state, not through f4load.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Dict

from f4load.part import FLASH_START, KB
from f4load.sim import faults
from f4load.sim.state import load_state

EXIT_LINK = 4  # docs/cli.md: target reset or link lost mid-operation


def run_f4load(state: Path, *args: str) -> subprocess.CompletedProcess:
    env: Dict[str, str] = dict(os.environ, F4LOAD_SIM_STATE=str(state), F4LOAD_SIM_LINK="ideal")
    env.pop("F4LOAD_SIM_FAULTS", None)
    return subprocess.run([sys.executable, "-m", "f4load", "--probe", "sim", *args], env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def flash_holds(state: Path, image: bytes, address: int = FLASH_START) -> bool:
    flash = load_state(state, use_environment=False).flash
    offset = address - FLASH_START
    return bytes(flash[offset:offset + len(image)]) == image


def old_then_new(tmp_path: Path) -> tuple:
    rng = random.Random(4)
    old, new = rng.randbytes(80 * KB), rng.randbytes(80 * KB)
    (tmp_path / "old.bin").write_bytes(old)
    (tmp_path / "new.bin").write_bytes(new)
    return str(tmp_path / "old.bin"), str(tmp_path / "new.bin"), new


def test_a_brownout_mid_erase_is_reported_and_a_second_run_completes(sim_state_dir: Path, tmp_path: Path):
    old, new, image = old_then_new(tmp_path)
    assert run_f4load(sim_state_dir, old, "--no-reset-run").returncode == 0
    faults.inject(str(sim_state_dir), "reset=erase:2:middle:brownout")

    cut = run_f4load(sim_state_dir, new, "--no-reset-run")
    assert cut.returncode == EXIT_LINK
    assert "reset" in cut.stderr and "brown-out" in cut.stderr
    assert "Traceback" not in cut.stderr
    assert not flash_holds(sim_state_dir, image)

    faults.clear(str(sim_state_dir))  # the supply is fixed
    again = run_f4load(sim_state_dir, new, "--no-reset-run")
    assert again.returncode == 0, again.stderr
    assert flash_holds(sim_state_dir, image)


def test_a_link_lost_mid_stream_is_reported_and_a_second_run_completes(sim_state_dir: Path, tmp_path: Path):
    old, new, image = old_then_new(tmp_path)
    assert run_f4load(sim_state_dir, old, "--no-reset-run").returncode == 0
    faults.inject(str(sim_state_dir), "disconnect=300")

    cut = run_f4load(sim_state_dir, new, "--no-reset-run")
    assert cut.returncode == EXIT_LINK
    assert "lost" in cut.stderr.lower() or "disconnect" in cut.stderr.lower()
    assert "Traceback" not in cut.stderr
    assert not flash_holds(sim_state_dir, image)

    faults.clear(str(sim_state_dir))  # the cable is plugged back in
    again = run_f4load(sim_state_dir, new, "--no-reset-run")
    assert again.returncode == 0, again.stderr
    assert flash_holds(sim_state_dir, image)
