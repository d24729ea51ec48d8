"""pyocd's own ST-Link driver over TCP (probe `stlink-tcp`, f4load/stlink_tcp.py) against `f4load-sim serve`.

pyocd and f4load run as subprocesses, as a user runs them; the server is the `stlink_server` fixture (an
STLINK-V3 in front of the test's virtual chip unless a test says otherwise).
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

from f4load.image import Image
from f4load.session import Session
from f4load.sim import state as sim_state
from f4load.stlink_tcp import ServerConnection

REPO = Path(__file__).resolve().parent.parent
FLASH = 0x0800_0000


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` with the test's environment."""
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=dict(os.environ))


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> bool:
    output = result.stdout + result.stderr
    lines = [line for line in output.splitlines() if all(n in line for n in needles)]
    return result.returncode != 0 and "Traceback" not in output and len(lines) == 1


def test_pyocd_flash_runs_pyocds_stlink_driver_through_the_server(stlink_server, tmp_path: Path,
                                                                    sim_state_dir: Path) -> None:
    server = stlink_server()
    image = random.Random(1).randbytes(20 * 1024)
    (tmp_path / "app.bin").write_bytes(image)
    result = run("pyocd", "flash", "-u", server.uid, "-t", "f4load_stm32f407xe", "-vv", "-O", "frequency=4600000",
                 str(tmp_path / "app.bin"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "STLink probe" in result.stderr and "firmware version: V3J13S1M4B3" in result.stderr  # pyocd's STLink
    assert server.stop() == 0
    assert bytes(sim_state.load_state(sim_state_dir).flash[:len(image)]) == image


def test_f4load_programs_and_reads_back_through_the_st_link_route(stlink_server, tmp_path: Path) -> None:
    server = stlink_server()
    image = random.Random(2).randbytes(40 * 1024)
    (tmp_path / "app.bin").write_bytes(image)
    result = run("f4load.cli", "--probe", server.uid, str(tmp_path / "app.bin"))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout + result.stderr
    assert "virtual time" in summary and "probe commands" in summary  # the server's clock, by its side channel
    result = run("f4load.cli", "read", "--probe", server.uid, hex(FLASH), str(len(image)), str(tmp_path / "out.bin"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "out.bin").read_bytes() == image


def test_the_session_counts_usb_commands_and_virtual_seconds(stlink_server) -> None:
    server = stlink_server()
    with Session(probe=server.uid, frequency=4_600_000) as session:
        before = session.virtual_now()
        assert before is not None and session.probe_commands is not None
        outcome = session.program(Image.from_bytes(random.Random(3).randbytes(8 * 1024)))
        assert outcome.verified and outcome.virtual_seconds is not None
        assert outcome.virtual_seconds > 2048 * 16e-6  # at least the 2048 word writes' own time (blank chip)
        assert session.commands_since_open is not None and session.commands_since_open > 50
        assert session.info is not None and session.info.probe.startswith("STLINK-V3 127.0.0.1:")


def test_a_second_client_of_the_same_board_gets_one_line(stlink_server, tmp_path: Path) -> None:
    server = stlink_server()
    with Session(probe=server.uid):
        result = run("f4load.cli", "info", "--probe", server.uid)
    assert one_line_error(result, "in use by another client"), result.stdout + result.stderr
    assert result.returncode == 3


def test_an_unreachable_server_is_one_line(tmp_path: Path) -> None:
    result = run("f4load.cli", "info", "--probe", "stlink-tcp:127.0.0.1:1")
    assert one_line_error(result, "cannot reach the ST-Link server at 127.0.0.1:1"), result.stdout + result.stderr
    result = run("pyocd", "cmd", "-u", "stlink-tcp:127.0.0.1:1", "-c", "read32 0")
    assert "cannot reach the ST-Link server" in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_bad_unique_ids_are_one_line(stlink_server) -> None:
    server = stlink_server()
    result = run("f4load.cli", "info", "--probe", "stlink-tcp:127.0.0.1:http")
    assert one_line_error(result, "the port must be a number"), result.stdout + result.stderr
    result = run("f4load.cli", "info", "--probe", f"{server.uid}:NOSUCHSERIAL")
    assert one_line_error(result, "no ST-Link with serial NOSUCHSERIAL"), result.stdout + result.stderr


def test_kill_9_of_f4load_mid_job_leaves_a_board_the_rerun_completes(stlink_server, tmp_path: Path) -> None:
    server = stlink_server(link="stlink-v2")
    image = random.Random(4).randbytes(512 * 1024)
    (tmp_path / "app.bin").write_bytes(image)
    (tmp_path / "pyocd.yaml").write_text("frequency: 4600000\n")  # pyocd's project file: SWD at 4 MHz on a V2
    clock = ServerConnection("127.0.0.1", server.port)
    start_ps, _ = clock.board_clock(0)
    job = subprocess.Popen([sys.executable, "-m", "f4load.cli", "--probe", server.uid, str(tmp_path / "app.bin")],
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while clock.board_clock(0)[0] - start_ps < 2 * 10**12 and time.monotonic() < deadline:  # 2 virtual seconds in
        time.sleep(0.05)
    job.kill()  # SIGKILL: no cleanup, the socket just closes
    assert job.wait() == -9
    while clock.devices()[0].in_use and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.running and "runs on" in server.log()
    diagnose = subprocess.run([sys.executable, "-m", "f4load.cli", "diagnose", "--probe", server.uid], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
    assert diagnose.returncode == 0, diagnose.stdout + diagnose.stderr
    assert "flash interface" in diagnose.stdout and "verdict:" in diagnose.stdout
    rerun = subprocess.run([sys.executable, "-m", "f4load.cli", "--probe", server.uid, str(tmp_path / "app.bin")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    result = run("f4load.cli", "read", "--probe", server.uid, hex(FLASH), str(len(image)), str(tmp_path / "out.bin"))
    assert result.returncode == 0 and (tmp_path / "out.bin").read_bytes() == image
