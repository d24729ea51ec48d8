"""Shared fixtures: a fresh virtual chip per test, pyocd sessions on it, pyocd as a subprocess, the peer FLM, and
`f4load-sim serve` (virtual boards behind virtual ST-Links) as a subprocess.

Every test that touches the virtual STM32F407 gets its own state directory through `F4LOAD_SIM_STATE`, so
tests never see each other's flash and can run in parallel (pytest-xdist).
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest

from f4load.sim.server_process import ServerProcess

REPO = Path(__file__).resolve().parent.parent
# Environment variables of the virtual chip; a test starts with none of them set except those it chooses.
SIM_ENV_VARS = ("F4LOAD_SIM_STATE", "F4LOAD_SIM_LINK", "F4LOAD_SIM_FAULTS", "F4LOAD_PROBE")


@pytest.fixture
def sim_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh (factory-new) virtual chip: an empty state directory in F4LOAD_SIM_STATE, no faults, no link."""
    for name in SIM_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    directory = tmp_path / "sim-state"
    monkeypatch.setenv("F4LOAD_SIM_STATE", str(directory))
    monkeypatch.setenv("F4LOAD_BACKUP_DIR", str(tmp_path / "backups"))  # never the user's real cache
    monkeypatch.setenv("F4LOAD_JOURNAL_DIR", str(tmp_path / "journal"))  # nor the user's run journal
    return directory


def _open_sim_session(link: str, options: Dict[str, object]):  # -> an open pyocd Session
    """A pyocd Session on the f4sim probe, found the way `pyocd -u f4sim` finds it, opened."""
    from pyocd.core.helpers import ConnectHelper

    session = ConnectHelper.session_with_chosen_probe(
        unique_id="f4sim", blocking=False, options={"f4sim.link": link, **options})
    assert session is not None, "pyocd did not find the f4sim probe"
    session.open()
    return session


@pytest.fixture
def open_session(sim_state_dir: Path) -> Iterator[Callable[..., object]]:
    """`open_session(link="ideal", **pyocd_options)` opens a pyocd Session on the test's virtual chip.

    Sessions still open at the end of the test are closed (which saves the chip). Only one can be open at a
    time: the chip is locked by the session that holds it, as a board by its probe.
    """
    opened = []

    def open_(link: str = "ideal", **options: object) -> object:
        session = _open_sim_session(link, options)
        opened.append(session)
        return session

    yield open_
    for session in reversed(opened):
        session.close()


@pytest.fixture
def sim_session(open_session: Callable[..., object]) -> object:
    """An open pyocd Session on a fresh virtual chip over the ideal link (no link cost)."""
    return open_session("ideal")


@pytest.fixture
def run_pyocd(sim_state_dir: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run the `pyocd` command line in a subprocess on the test's virtual chip.

    `run_pyocd("commander", "-u", "f4sim", "-c", "read32 0xE0042000", link="ideal")` returns the completed
    process (text stdout/stderr); the link model defaults to ideal, `link=None` leaves pyocd's default.
    """
    def run(*args: str, link: Optional[str] = "ideal", faults: Optional[str] = None,
            extra_env: Optional[Dict[str, str]] = None, timeout: float = 120) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env["F4LOAD_SIM_STATE"] = str(sim_state_dir)
        env.pop("F4LOAD_SIM_LINK", None)
        env.pop("F4LOAD_SIM_FAULTS", None)
        if link is not None:
            env["F4LOAD_SIM_LINK"] = link
        if faults is not None:
            env["F4LOAD_SIM_FAULTS"] = faults
        env.update(extra_env or {})
        command: Sequence[str] = [sys.executable, "-m", "pyocd", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)

    return run


@pytest.fixture
def peer_flm() -> Path:
    """The Keil STM32F4xx_2048.FLM peer algorithm (never in this repository); skips when it is absent."""
    path = Path(os.environ.get("F4LOAD_PEER_FLM", str(REPO.parent / "shared" / "peers" / "STM32F4xx_2048.FLM")))
    if not path.is_file():
        pytest.skip(f"peer FLM absent: {path} (set F4LOAD_PEER_FLM)")
    return path


@pytest.fixture
def chip(sim_state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh virtual chip on the ideal link (function only, no link cost), for tests of the `f4load` command line,
    chosen as the default probe (F4LOAD_PROBE=sim) as a user without a board would. The command line configures
    the pyocd and f4load loggers as a program would; they are put back afterwards for the tests that follow."""
    monkeypatch.setenv("F4LOAD_SIM_LINK", "ideal")
    monkeypatch.setenv("F4LOAD_PROBE", "sim")
    loggers = [logging.getLogger(name) for name in ("pyocd", "f4load")]
    saved = [(lg.level, lg.propagate, list(lg.handlers)) for lg in loggers]
    yield sim_state_dir
    for logger, (level, propagate, handlers) in zip(loggers, saved):
        logger.setLevel(level)
        logger.propagate = propagate
        logger.handlers[:] = handlers


@pytest.fixture
def stlink_server(tmp_path: Path, sim_state_dir: Path) -> Iterator[Callable[..., ServerProcess]]:
    """`stlink_server(link="stlink-v3", boards=(), faults=())` starts `f4load-sim serve --port 0` on the test's
    state directory (the default board, or `--board` each of `boards`) and returns its ServerProcess (`port`,
    `uid`, `log()`, `stop()`); servers still running at the end of the test are stopped with SIGTERM (which
    saves their boards)."""
    started: List[ServerProcess] = []

    def start(link: str = "stlink-v3", boards: Sequence[str] = (), faults: Sequence[str] = ()) -> ServerProcess:
        server = ServerProcess(sim_state_dir, link, boards, faults, log_path=tmp_path / f"serve-{len(started)}.log",
                               cwd=REPO)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
