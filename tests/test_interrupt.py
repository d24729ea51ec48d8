"""Ctrl-C (SIGINT) and SIGTERM at any moment of a job: f4load stops at its next safe point, halts the core, locks
FLASH_CR, names the backup when kept bytes were at stake, and exits 130 with one line, every time.

The real `python -m f4load` runs as a subprocess on a virtual chip of its own, with its stderr on a pseudo
terminal so that it draws its progress bar; the test reads the bar and sends the signal when the job has got
that far (or after a wall-clock delay, for the moments before the bar appears). How the process left FLASH_CR
and the core is read from the chip's record of the last debugger session (`f4load-sim status` shows it).
"""
from __future__ import annotations

import os
import pty
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from f4load.part import FLASH_START, KB, SECTORS_1M
from f4load.sim.state import load_state, read_last_session, save_state

EXIT_INTERRUPTED = 130
SECTORS = SECTORS_1M[:8]  # the STM32F407VE's 512 KB
PROGRESS = re.compile(rb"(\d[\d,]*)/(\d[\d,]*) KB")
# A moment of a run: (kind, value, seconds after it). Kinds: "mapped" - the process has loaded the shared library
# named `value` (_cffi_backend: f4load's modules are being imported, its signal handlers are in place;
# libunicorn: the virtual chip is being powered up); "bar" - the progress bar appeared (the plan is made, the
# first erase starts); "progress" - the bar has reached the fraction `value`.
Moment = Tuple[str, object, float]


class Run:
    """One `python -m f4load FILE` with stderr on a pty: its output, its exit status, its pid."""

    def __init__(self, state: Path, backups: Path, *args: str) -> None:
        env: Dict[str, str] = dict(os.environ, F4LOAD_SIM_STATE=str(state), F4LOAD_SIM_LINK="ideal",
                                   F4LOAD_BACKUP_DIR=str(backups))
        env.pop("F4LOAD_SIM_FAULTS", None)
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen([sys.executable, "-m", "f4load", *args, "--probe", "sim"], env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        self.started = time.monotonic()
        self.err = b""
        self.returncode: Optional[int] = None

    def _read(self, timeout: float) -> bool:
        """Read what the pty has within `timeout`; False once the process has closed it."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed its end
            return False
        self.err += chunk
        return bool(chunk)

    def progress(self) -> float:
        """The bar's last fraction (0 before it appears)."""
        found = PROGRESS.findall(self.err)
        if not found:
            return 0.0
        done, total = (int(x.replace(b",", b"")) for x in found[-1])
        return done / total if total else 0.0

    def mapped(self, library: str) -> bool:
        """Whether the process has loaded a shared library whose path contains `library` (Linux /proc)."""
        try:
            with open(f"/proc/{self.process.pid}/maps") as maps:
                return library in maps.read()
        except OSError:
            return False

    def wait_until(self, moment: Moment) -> bool:
        """Follow the output until `moment` has come (see Moment); False if the process ended first."""
        kind, value, delay = moment
        since: Optional[float] = None
        while self.process.poll() is None:
            now = time.monotonic()
            if since is None:
                if kind == "mapped" and self.mapped(str(value)):
                    since = now
                elif kind == "bar" and PROGRESS.search(self.err):
                    since = now
                elif kind == "progress" and self.progress() >= float(value):
                    since = now
            if since is not None and now - since >= delay:
                return True
            self._read(0.002)
        return False

    def finish(self, timeout: float = 60) -> str:
        self.returncode = self.process.wait(timeout=timeout)
        while self._read(0.05):
            pass
        os.close(self.master)
        return self.err.decode(errors="replace").replace("\r\n", "\n")


def error_lines(stderr: str) -> List[str]:
    """The lines f4load printed as messages (the progress bar redraws with \\r and is left out)."""
    return [line.split("\r")[-1] for line in stderr.splitlines() if "f4load:" in line.split("\r")[-1]]


def holds(state: Path, image: bytes) -> bool:
    return bytes(load_state(state, use_environment=False).flash[:len(image)]) == image


def put_back(state: Path, old: bytes, sectors: List[int]) -> None:
    """Give the chip its old contents back in `sectors` (so that a run has that much work to do)."""
    chip = load_state(state, use_environment=False)
    for index in sectors:
        s = SECTORS[index]
        a, b = s.start - FLASH_START, s.end - FLASH_START
        chip.flash[a:b] = old[a:b]
    save_state(chip, state)


def different_sectors(state: Path, image: bytes) -> List[int]:
    flash = load_state(state, use_environment=False).flash
    return [s.index for s in SECTORS
            if flash[s.start - FLASH_START:s.end - FLASH_START] != image[s.start - FLASH_START:s.end - FLASH_START]]


def check_interrupted(run: Run, stderr: str, state: Path) -> None:
    assert run.returncode == EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("f4load: error: interrupted (Ctrl-C)"), lines
    left = read_last_session(state)
    if left is not None and left["pid"] == run.process.pid:  # the probe was opened (not stopped before that)
        assert left["flash_cr_locked"], (left, stderr)
        assert left["core"] == "halted", (left, stderr)


# Moments, in order, over runs that share one chip: each run goes on from where the previous one stopped. Before
# the bar: importing f4load, powering the virtual chip up and connecting, the sector CRCs; then fractions of the
# bar (erases and program buffers); then delays after the bar is full (the verify CRCs, UnInit, closing).
MOMENTS: List[Moment] = (
    [("mapped", "_cffi_backend", 0.0), ("mapped", "libunicorn", 0.0), ("mapped", "libunicorn", 0.3)]
    + [("progress", f, 0.0) for f in (0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.15, 0.35)]
    + [("progress", 1.0, 0.0), ("progress", 1.0, 0.02), ("progress", 1.0, 0.05)]
)


@pytest.mark.parametrize("half", [0, 1])  # the 20 moments, every other one per chip: xdist runs the halves apart
def test_twenty_ctrl_c_during_a_512_kb_job_each_exit_130_with_flash_cr_locked_and_a_rerun_completes(
        sim_state_dir: Path, tmp_path: Path, half: int) -> None:
    assert len(MOMENTS) == 20
    rng = random.Random(10 + half)
    old, new = rng.randbytes(512 * KB), rng.randbytes(512 * KB)
    put_back(sim_state_dir, old, list(range(8)))
    (tmp_path / "new.bin").write_bytes(new)
    outcomes = []
    for moment in MOMENTS[half::2]:
        # Every run has at least one sector to erase and program; the moments after the bar, two (so that the
        # verify CRCs that follow it take long enough to be interrupted).
        todo = different_sectors(sim_state_dir, new)
        wanted = 2 if moment[1] == 1.0 else 1
        if len(todo) < wanted:
            put_back(sim_state_dir, old, [i for i in (7, 6) if i not in todo][:wanted - len(todo)])
        run = Run(sim_state_dir, tmp_path / "backups", str(tmp_path / "new.bin"), "--no-reset-run")
        reached = run.wait_until(moment)
        if reached:
            os.kill(run.process.pid, signal.SIGINT)
        stderr = run.finish()
        assert reached, f"{moment}: the job ended before that moment: {stderr}"
        check_interrupted(run, stderr, sim_state_dir)
        outcomes.append(error_lines(stderr)[0])
    assert len(set(outcomes)) >= 6  # the moments really differ: so do the messages

    again = Run(sim_state_dir, tmp_path / "backups", str(tmp_path / "new.bin"), "--no-reset-run")
    stderr = again.finish()
    assert again.returncode == 0, stderr
    assert holds(sim_state_dir, new)


def whole_steps_only(data: bytes, old: bytes, new: bytes) -> bool:
    """A sector as a stop between two stub commands leaves it: as it was, or the new bytes up to a whole 8 KB
    buffer and erased after that (never a half-erased sector)."""
    if data == old:
        return True
    for k in range(0, len(data) + 1, 8 * KB):
        if data[:k] == new[:k] and data[k:] == b"\xff" * (len(data) - k):
            return True
    return False


def test_ctrl_c_during_an_erase_lets_it_finish_and_leaves_no_sector_half_erased(
        sim_state_dir: Path, tmp_path: Path) -> None:
    rng = random.Random(11)
    old, new = rng.randbytes(512 * KB), rng.randbytes(256 * KB)
    put_back(sim_state_dir, old, list(range(8)))
    (tmp_path / "new.bin").write_bytes(new)  # sectors 6 and 7: two 128 KB erases of 1 s each
    run = Run(sim_state_dir, tmp_path / "backups", str(tmp_path / "new.bin"), "--address", "0x08040000",
              "--no-reset-run")
    assert run.wait_until(("bar", None, 0.0))  # the plan is made: the first erase starts now
    os.kill(run.process.pid, signal.SIGINT)
    stderr = run.finish()
    check_interrupted(run, stderr, sim_state_dir)
    assert "nothing is half done" in stderr and "half-erased" not in stderr, stderr
    flash = load_state(sim_state_dir, use_environment=False).flash
    for index, offset in ((6, 0), (7, 128 * KB)):
        s = SECTORS[index]
        data = bytes(flash[s.start - FLASH_START:s.end - FLASH_START])
        assert whole_steps_only(data, old[s.start - FLASH_START:s.end - FLASH_START], new[offset:offset + s.size])


def test_sigterm_is_taken_like_ctrl_c(sim_state_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "app.bin").write_bytes(random.Random(12).randbytes(256 * KB))
    run = Run(sim_state_dir, tmp_path / "backups", str(tmp_path / "app.bin"), "--no-reset-run")
    assert run.wait_until(("progress", 0.3, 0.0))
    os.kill(run.process.pid, signal.SIGTERM)
    stderr = run.finish()
    assert run.returncode == EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("f4load: error: interrupted (SIGTERM)"), lines
    assert read_last_session(sim_state_dir)["flash_cr_locked"]


def test_ctrl_c_after_the_first_erase_names_the_backup_of_the_kept_bytes(sim_state_dir: Path, tmp_path: Path) -> None:
    rng = random.Random(13)
    old = rng.randbytes(512 * KB)
    put_back(sim_state_dir, old, list(range(8)))
    (tmp_path / "app.bin").write_bytes(rng.randbytes(200 * KB))  # sector 5 keeps its last 56 KB
    run = Run(sim_state_dir, tmp_path / "backups", str(tmp_path / "app.bin"), "--no-reset-run")
    assert run.wait_until(("progress", 0.5, 0.0))
    os.kill(run.process.pid, signal.SIGINT)
    stderr = run.finish()
    assert run.returncode == EXIT_INTERRUPTED, stderr
    lines = error_lines(stderr)
    assert len(lines) == 2 and lines[0].startswith("f4load: error: interrupted (Ctrl-C)"), lines
    backup = re.search(r"saved to (\S+\.hex) before their sectors' erase", lines[1])
    assert backup is not None, lines
    import bincopy

    kept = bincopy.BinFile(backup.group(1))
    assert kept.minimum_address == FLASH_START + 200 * KB
    assert kept.as_binary() == old[200 * KB:256 * KB]


def test_ctrl_c_before_the_work_starts_says_so_and_changes_nothing(sim_state_dir: Path, tmp_path: Path) -> None:
    old = random.Random(14).randbytes(512 * KB)
    put_back(sim_state_dir, old, list(range(8)))
    (tmp_path / "app.bin").write_bytes(random.Random(15).randbytes(64 * KB))
    run = Run(sim_state_dir, tmp_path / "backups", str(tmp_path / "app.bin"), "--no-reset-run")
    assert run.wait_until(("mapped", "_cffi_backend", 0.0))  # importing f4load and pyocd
    os.kill(run.process.pid, signal.SIGINT)
    stderr = run.finish()
    assert run.returncode == EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stderr and len(error_lines(stderr)) == 1, stderr
    assert re.search(r"nothing was (done|changed|erased)|no work on the target was under way", stderr), stderr
    assert holds(sim_state_dir, old)


def test_each_fact_of_the_way_out_is_said_once() -> None:
    from f4load.interrupt import Interrupted

    error = Interrupted("the stub stopped after erase sector 3")
    error.add_detail("the core is halted and FLASH_CR locked")
    error.add_detail("the core is halted and FLASH_CR locked")
    assert str(error) == ("interrupted (Ctrl-C): the stub stopped after erase sector 3; the core is halted and "
                          "FLASH_CR locked")
