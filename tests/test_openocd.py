"""OpenOCD (Debian's 0.12, installed by scripts/setup) as a client of the virtual ST-Link, with its own scripts:
`interface/stlink.cfg` + `hla_stlink_backend tcp PORT` (the hla driver) and `interface/stlink-dap.cfg` +
`st-link backend tcp PORT` (the DAP-direct driver), then `target/stm32f4x.cfg`.

Each test starts `f4load-sim serve` (the `stlink_server` fixture) on its own virtual chip; OpenOCD's TCP and
gdb ports are turned off (or chosen free) so that tests can run in parallel.
"""
from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Sequence

import pytest

from f4load.session import Session
from f4load.sim import state as sim_state

REPO = Path(__file__).resolve().parent.parent
FLASH = 0x0800_0000
HLA = ["-f", "interface/stlink.cfg", "-c", "hla_stlink_backend tcp {port}"]
DAP = ["-f", "interface/stlink-dap.cfg", "-c", "st-link backend tcp {port}"]
NO_PORTS = ["-c", "gdb_port disabled", "-c", "tcl_port disabled", "-c", "telnet_port disabled"]


def openocd(driver: Sequence[str], port: int, *commands: str, ports: Sequence[str] = tuple(NO_PORTS),
            timeout: float = 300) -> subprocess.CompletedProcess:
    args: List[str] = ["openocd", *(a.format(port=port) for a in driver), *ports, "-f", "target/stm32f4x.cfg"]
    for command in commands:
        args += ["-c", command]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def f4load_read(uid: str, length: int, out: Path) -> bytes:
    result = subprocess.run([sys.executable, "-m", "f4load.cli", "read", "--probe", uid, hex(FLASH), str(length),
                             str(out)], capture_output=True, text=True, timeout=300, cwd=REPO, env=dict(os.environ))
    assert result.returncode == 0, result.stdout + result.stderr
    return out.read_bytes()


@pytest.mark.parametrize("driver", [HLA, DAP], ids=["hla", "stlink-dap"])
def test_openocd_programs_512_kb_and_f4load_reads_the_same_bytes(driver, stlink_server, tmp_path: Path) -> None:
    server = stlink_server(link="stlink-v2")
    image = random.Random(512).randbytes(512 * 1024)
    (tmp_path / "app.bin").write_bytes(image)
    result = openocd(driver, server.port, f"program {tmp_path / 'app.bin'} 0x08000000 verify reset exit")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "** Verified OK **" in output and "STLINK V2J40M27" in output
    assert f4load_read(server.uid, len(image), tmp_path / "back.bin") == image


def test_flash_info_options_and_protection_agree_with_f4load(stlink_server) -> None:
    server = stlink_server(link="stlink-v2")
    result = openocd(HLA, server.port, "init", "reset halt", "flash protect 0 1 2 on", "flash info 0",
                     "stm32f2x options_read 0", "shutdown")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "flash size = 512 KiB" in output and "device id = 0x10070413" in output
    protected = [line.split(":")[0].strip(" \t#") for line in output.splitlines() if line.endswith(") protected")]
    assert protected == ["1", "2"], output
    with Session(probe=server.uid) as session:
        info = session.info
        assert info is not None and info.part.flash_size == 512 * 1024 and info.idcode == 0x1007_0413
        assert list(info.options.write_protected(info.part)) == [1, 2]
        assert f"user_options 0x{info.options.optcr & 0xEC:02X}" in output  # BOR_LEV, WDG_SW, nRST_* (RM0090 3.9.10)


def test_openocd_lock_and_unlock_are_what_f4load_sees(stlink_server, sim_state_dir: Path) -> None:
    chip = sim_state.reset_state(sim_state_dir)
    chip.flash[:16] = b"application code"
    sim_state.save_state(chip, sim_state_dir)
    server = stlink_server(link="stlink-v2")
    result = openocd(HLA, server.port, "init", "reset halt", "stm32f2x lock 0", "shutdown")
    assert result.returncode == 0, result.stdout + result.stderr
    with Session(probe=server.uid) as session:
        assert session.info is not None and session.info.options.rdp_level == 1
    result = openocd(HLA, server.port, "init", "reset halt", "stm32f2x unlock 0", "shutdown")
    assert result.returncode == 0, result.stdout + result.stderr
    with Session(probe=server.uid) as session:
        assert session.info is not None and session.info.options.rdp_level == 0
        assert session.read(FLASH, 16) == b"\xff" * 16  # level 1 -> 0 mass-erases the flash (RM0090 3.7.3)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_gdb_load_through_openocds_gdbserver(stlink_server, tmp_path: Path) -> None:
    server = stlink_server()
    image = random.Random(3).randbytes(24 * 1024)
    (tmp_path / "app.bin").write_bytes(image)
    elf = tmp_path / "app.elf"
    subprocess.run(["arm-none-eabi-objcopy", "-I", "binary", "-O", "elf32-littlearm", "--change-section-address",
                    ".data=0x08000000", "--rename-section", ".data=.text,alloc,load,contents,code",
                    str(tmp_path / "app.bin"), str(elf)], check=True)
    gdb_port = free_port()
    daemon = subprocess.Popen(["openocd", *(a.format(port=server.port) for a in HLA), "-c", f"gdb_port {gdb_port}",
                               "-c", "tcl_port disabled", "-c", "telnet_port disabled", "-f", "target/stm32f4x.cfg",
                               "-c", "init", "-c", "reset halt"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", gdb_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        gdb = subprocess.run(["gdb-multiarch", "-nx", "-batch", "-ex", "set architecture armv7e-m",
                              "-ex", f"target extended-remote 127.0.0.1:{gdb_port}", "-ex", "load",
                              "-ex", "compare-sections", "-ex", "monitor shutdown", str(elf)],
                             capture_output=True, text=True, timeout=300)
    finally:
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    assert "Transfer rate" in gdb.stdout and "matched" in gdb.stdout, gdb.stdout + gdb.stderr
    assert "MIS-MATCHED" not in gdb.stdout
    assert f4load_read(server.uid, len(image), tmp_path / "back.bin") == image
