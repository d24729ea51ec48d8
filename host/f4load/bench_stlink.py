"""The bench through the virtual ST-Link: every programmer as a client of `f4load-sim serve`, in one virtual clock.

Same jobs, floors and images as `bench.py` (512 KB over other data, identical re-flash, one sector changed with
every programmer; a 1 MB part, a sparse HEX file with bytes kept and 16 KB into a blank sector with f4load).
Each run gets a fresh state directory holding the job's "chip before", a server process on it (an ST-Link/V2-1
or an STLINK-V3 in front of the board, `--link`), and one programmer; every USB command it sends costs its
transaction on the board's clock (sim/usb_link.py). Times and USB command counts are read from the board
through the server's side channel (`F4LOAD_BOARD_CLOCK`), from the start of the work to its end, connecting
left out; the flash is checked in the state directory after the server stopped (SIGTERM saves it).

| programmer | how | SWD clock it asks for |
|---|---|---|
| f4load | `Session.program` on `stlink-tcp` (what `f4load --probe stlink-tcp:...` runs) | its default, 8 MHz |
| f4load, 24 MHz SWD | the same with `frequency` 24 MHz | 24 MHz |
| pyocd + f4load stub | pyocd's FileProgrammer, target `f4load_stm32f407xe`, image read back | 8 MHz (f4load's) |
| pyocd + Keil FLM | the same with Keil's STM32F4xx_2048.FLM (`sim.peer.use_flm`) | 1 MHz |
| pyocd + stm32f429xg | the same with pyocd's builtin `stm32f429xg` target and its flash algorithm | 1 MHz |
| OpenOCD hla / stlink-dap | its own scripts and drivers, timed through its Tcl port (below) | 2, then 8 MHz |

OpenOCD: `interface/stlink.cfg` + `hla_stlink_backend tcp PORT`, or `interface/stlink-dap.cfg` + `st-link
backend tcp PORT`, then `target/stm32f4x.cfg`; `init`, `reset init`, `poll off`, then timed: `flash write_image
erase FILE 0x08000000` and `verify_image FILE 0x08000000` (what `program ... verify` runs) through OpenOCD's Tcl
port. OpenOCD's `reset init` (stm32f4x.cfg) switches the core to a 64 MHz PLL; the virtual chip does not model the
PLL and keeps running at 16 MHz, so OpenOCD's target-side CRC (verify_image) and its loader's own loop are
charged up to 4 times their real time (the flash's own times are unaffected).

What the ST-Link runs at: pyocd's driver picks the fastest entry of its own table not above the request, and
that table calls the V2's fastest divisor 4.6 MHz, so f4load's 8 MHz (and the pyocd + f4load stub row, asked
for the same) gives the V2's 4 MHz (8 MHz on a V3) and 24 MHz gives the V2's 4 MHz (24 MHz on a V3); pyocd's own
default, 1 MHz, gives 950 kHz (1 MHz). OpenOCD's stm32f4x.cfg asks 2 MHz, then 8 MHz after `reset init`: 1.8
then 4 MHz on a V2, 1 then 8 MHz on a V3.
"""
from __future__ import annotations

import io
import socket
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

from f4load.bench import (
    F4LOAD,
    FULL,
    PYOCD_KEIL,
    PYOCD_STUB,
    STLINK_FULL_LIMIT,
    BenchResult,
    Job,
    Result,
    flash_holds,
    make_jobs,
    peer_flm,
    prepare_chip,
    record_runs,
)
from f4load.part import FLASH_START

STLINK_LINKS = ("stlink-v2", "stlink-v3")
F4LOAD_FAST = "f4load, 24 MHz SWD asked"
PYOCD_F429 = "pyocd + builtin stm32f429xg"
OPENOCD_HLA = "OpenOCD 0.12 hla"
OPENOCD_DAP = "OpenOCD 0.12 stlink-dap"
FAST_SWD_HZ = 24_000_000
HLA = ["-f", "interface/stlink.cfg", "-c", "hla_stlink_backend tcp {port}"]
DAP = ["-f", "interface/stlink-dap.cfg", "-c", "st-link backend tcp {port}"]
OPENOCD_TIMEOUT_S = 900


class BoardClock:
    """The board's virtual clock and USB command count, read through the server's side channel."""

    def __init__(self, port: int) -> None:
        from f4load.stlink_tcp import ServerConnection

        self._connection = ServerConnection("127.0.0.1", port)

    def read(self) -> Tuple[int, int]:
        clock = self._connection.board_clock(0)
        assert clock is not None, "not f4load's server"
        return clock

    def close(self) -> None:
        self._connection.close()


class _Run:
    """One run: a fresh state directory with the job's flash, a server on it; the flash afterwards."""

    def __init__(self, job: Job, link: str) -> None:
        from f4load.sim.server_process import ServerProcess

        self.job = job
        self._tmp = tempfile.TemporaryDirectory(prefix="f4load-bench-stlink-")
        self.directory = Path(self._tmp.name)
        prepare_chip(self.directory, job)
        self.image_path = job.write_file(self.directory)
        self.server = ServerProcess(self.directory, link, log_path=self.directory / "serve.log")
        self.clock = BoardClock(self.server.port)

    def finish(self) -> bool:
        """Stop the server (which saves the board) and say whether the flash holds what the job must leave."""
        self.clock.close()
        self.server.stop()
        ok = flash_holds(self.directory, self.job)
        self._tmp.cleanup()
        return ok


def run_f4load(job: Job, link: str, tool: str = F4LOAD, frequency: Optional[int] = None) -> Result:
    from f4load.image import load_image
    from f4load.session import Session

    run = _Run(job, link)
    try:
        image = load_image(str(run.image_path))
        with Session(probe=run.server.uid, frequency=frequency, backup_dir=run.directory / "backups") as session:
            start = run.clock.read()
            outcome = session.program(image)
            end = run.clock.read()
    finally:
        ok = run.finish()
    return Result(job.name, tool, (end[0] - start[0]) / 1e12, end[1] - start[1], job.floor_s,
                  "target CRC per sector" if outcome.verified else "not verified", ok and bool(outcome.verified))


def run_pyocd(job: Job, link: str, tool: str, target: str = "f4load_stm32f407xe",
              install: Optional[Callable[[Any], Any]] = None, frequency: Optional[int] = None) -> Result:
    """pyocd's FileProgrammer (default options, and `frequency` if given) through pyocd's ST-Link driver, then the
    image read back."""
    from pyocd.core.helpers import ConnectHelper
    from pyocd.flash.file_programmer import FileProgrammer

    run = _Run(job, link)
    try:
        options = {"frequency": frequency} if frequency is not None else {}
        session = ConnectHelper.session_with_chosen_probe(unique_id=run.server.uid, blocking=False,
                                                          target_override=target, options=options)
        if install is not None:
            install(session)
        with session:
            start = run.clock.read()
            FileProgrammer(session, progress=lambda _fraction: None).program(
                io.BytesIO(job.image), base_address=FLASH_START, file_format="bin")
            programmed = run.clock.read()
            read = bytes(session.target.read_memory_block8(FLASH_START, len(job.image)))
            end = run.clock.read()
    finally:
        ok = run.finish()
    return Result(job.name, tool, (end[0] - start[0]) / 1e12, end[1] - start[1], job.floor_s,
                  "read back 512 KB through pyocd", ok and read == job.image,
                  verify_seconds=(end[0] - programmed[0]) / 1e12)


class OpenOcd:
    """OpenOCD 0.12 as a child process, connected and reset-initialised, driven through its Tcl RPC port."""

    def __init__(self, driver: Sequence[str], server_port: int, log_path: Path) -> None:
        self.tcl_port = _free_port()
        args = ["openocd", *(a.format(port=server_port) for a in driver), "-c", "gdb_port disabled",
                "-c", "telnet_port disabled", "-c", f"tcl_port {self.tcl_port}", "-f", "target/stm32f4x.cfg",
                "-c", "init", "-c", "reset init", "-c", "poll off"]
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self._sock = self._connect()

    def _connect(self) -> socket.socket:
        deadline = time.monotonic() + 60
        while True:
            try:
                return socket.create_connection(("127.0.0.1", self.tcl_port), timeout=OPENOCD_TIMEOUT_S)
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("OpenOCD did not start (see its log)") from None
                time.sleep(0.1)

    def run(self, command: str) -> str:
        """Run one Tcl command; 'OK' or 'FAIL: <message>'."""
        wrapped = f"if {{[catch {{{command}}} e]}} {{return \"FAIL: $e\"}} else {{return OK}}"
        self._sock.sendall(wrapped.encode() + b"\x1a")
        reply = bytearray()
        while not reply.endswith(b"\x1a"):
            chunk = self._sock.recv(4096)
            if not chunk:
                raise RuntimeError("OpenOCD closed its Tcl port")
            reply += chunk
        return reply[:-1].decode(errors="replace")

    def close(self) -> None:
        try:
            self._sock.sendall(b"shutdown\x1a")
        except OSError:
            pass
        self._sock.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_openocd(job: Job, link: str, tool: str, driver: Sequence[str]) -> Result:
    """OpenOCD's `flash write_image erase` then `verify_image` (what `program FILE verify` runs), each timed."""
    run = _Run(job, link)
    openocd: Optional[OpenOcd] = None
    note = ""
    try:
        openocd = OpenOcd(driver, run.server.port, run.directory / "openocd.log")
        assert openocd.run("echo ready") == "OK"  # init and reset init are done
        start = run.clock.read()
        written = openocd.run(f"flash write_image erase {run.image_path} {FLASH_START:#x}")
        programmed = run.clock.read()
        verified = openocd.run(f"verify_image {run.image_path} {FLASH_START:#x}")
        end = run.clock.read()
        if written != "OK" or verified != "OK":
            note = f"{written}; {verified}"
    finally:
        if openocd is not None:
            openocd.close()
        ok = run.finish()
    return Result(job.name, tool, (end[0] - start[0]) / 1e12, end[1] - start[1], job.floor_s,
                  "target CRC (verify_image)" if not note else note, ok and not note,
                  verify_seconds=(end[0] - programmed[0]) / 1e12)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_stlink_bench(link: str, seed: int, say: Callable[[str], None] = lambda _line: None) -> BenchResult:
    """Every job with every programmer through the virtual ST-Link `link`."""
    from f4load.session import DEFAULT_SWD_HZ
    from f4load.sim.peer import use_flm

    bench = BenchResult(link, seed, route="st-link")
    keil = peer_flm()
    for job in make_jobs(seed):
        runs: List[Callable[[], Result]] = [partial(run_f4load, job, link)]
        if job.all_programmers:
            runs += [
                partial(run_f4load, job, link, F4LOAD_FAST, FAST_SWD_HZ),
                partial(run_pyocd, job, link, PYOCD_STUB, frequency=DEFAULT_SWD_HZ),
                partial(run_pyocd, job, link, PYOCD_F429, "stm32f429xg"),
                partial(run_openocd, job, link, OPENOCD_HLA, HLA),
                partial(run_openocd, job, link, OPENOCD_DAP, DAP),
            ]
            if keil is not None:
                runs.insert(3, partial(run_pyocd, job, link, PYOCD_KEIL, install=partial(use_flm, flm_path=keil)))
        record_runs(bench, job, runs, keil_absent=keil is None, say=say)
    full = bench.get(FULL, F4LOAD)
    if full is not None and full.ratio is not None:
        bench.checks.append((f"issue 11: {link}: f4load full job {full.seconds:.3f} s = {full.ratio:.3f} x the "
                             f"floor (limit {STLINK_FULL_LIMIT:.2f} x)", full.ratio <= STLINK_FULL_LIMIT and full.ok))
    for result in bench.results:
        if result.seconds is not None and not result.ok:
            bench.checks.append((f"{link}: {result.tool}, {result.job}: the flash does not hold what it must",
                                 False))
    return bench
