"""`invoke bench`: f4load against pyocd on the virtual STM32F407, in virtual seconds and probe commands.

Three jobs, each on a 512 KB STM32F407VE under one link model (`stlink-v2` by default), with a random image
from a fixed seed (the same bytes every run, so the table is reproducible):

| job | chip before | image |
|---|---|---|
| `full` | every sector holds other data (another seed) | the 512 KB image: erase 0-7, program, verify |
| `identical` | already holds the image | the same image again: nothing needs to change |
| `one sector` | holds the image | the image with 256 bytes changed in sector 5 (128 KB) |

and three programmers, each run in its own fresh state directory prepared with the "chip before" contents:

- **f4load**: the product path, `f4load.session.Session.program` (sector CRCs, plan, stream, CRC verify);
- **pyocd + f4load stub**: pyocd's `FileProgrammer` with its default options on the f4sim board, whose
  target type (`f4load_stm32f407xe`) uses f4load's stub as pyocd's flash algorithm; then the image is read
  back through pyocd, since pyocd has no verify step of its own;
- **pyocd + Keil FLM**: the same, with Keil's `STM32F4xx_2048.FLM` installed by `f4load.sim.peer.use_flm`
  (skipped, and said so, when the peer file is absent).

Each is measured on the probe's clock and command counter from the start of the work to its end (connecting
is left out, for all three alike). The **floor** of a job is the least time the flash itself needs for what
must change (DS8626 Table 40 typical, `f4load.floor`): for `full` the erase of sectors 0-7 and 131,072 x32
writes, 6.65 s; for `identical` nothing (0 s, so no ratio); for `one sector` the erase of sector 5 and its
32,768 writes.

Acceptance (issue 4): f4load's `full` job within 1.10 x the floor, and at least 2 x faster than pyocd + Keil
in the same run. `run_bench` returns the table and the checks; `tasks.py` prints them, writes the markdown
to `docs/bench.md` and exits non-zero when a check fails.
"""
from __future__ import annotations

import io
import os
import random
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from f4load import protocol
from f4load.floor import floor_seconds, program_writes
from f4load.part import FLASH_START, KB, sectors_for

SEED = 407
IMAGE_SIZE = 512 * KB
FLASH_KB = 512
DEFAULT_LINK = "stlink-v2"
CHANGED_SECTOR = 5
CHANGED_BYTES = 256
# Acceptance limits (issue 4).
MAX_RATIO_TO_FLOOR = 1.10
MIN_SPEEDUP_OVER_KEIL = 2.0

F4LOAD = "f4load"
PYOCD_STUB = "pyocd + f4load stub"
PYOCD_KEIL = "pyocd + Keil STM32F4xx_2048.FLM"
JOBS = ("full", "identical", "one sector")
SIM_ENV = ("F4LOAD_SIM_STATE", "F4LOAD_SIM_LINK", "F4LOAD_SIM_FAULTS")


@dataclass(frozen=True)
class Job:
    name: str
    before: bytes   # the flash contents (512 KB) before the job
    image: bytes    # the image to program at FLASH_START
    floor_s: float  # DS8626 typical floor of what must change
    what: str


@dataclass
class Result:
    job: str
    tool: str
    seconds: Optional[float]      # virtual seconds of the work (None: not run)
    commands: Optional[int]
    floor_s: float
    verified: str                 # how the result was checked
    ok: bool                      # the flash held the image afterwards
    note: str = ""
    verify_seconds: Optional[float] = None  # pyocd: the read-back part of `seconds`; OpenOCD: verify_image

    @property
    def ratio(self) -> Optional[float]:
        if self.seconds is None or self.floor_s <= 0:
            return None
        return self.seconds / self.floor_s

    @property
    def ratio_without_verify(self) -> Optional[float]:
        """The ratio to the floor without a separate verify step (the pyocd harness's read-back)."""
        if self.seconds is None or self.floor_s <= 0:
            return None
        return (self.seconds - (self.verify_seconds or 0.0)) / self.floor_s


@dataclass
class BenchResult:
    link: str
    seed: int
    results: List[Result] = field(default_factory=list)
    checks: List[Tuple[str, bool]] = field(default_factory=list)
    route: str = "in-process"  # or "st-link": through f4load-sim serve (bench_stlink.py)

    def get(self, job: str, tool: str) -> Optional[Result]:
        return next((r for r in self.results if r.job == job and r.tool == tool), None)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks)


# --- the jobs --------------------------------------------------------------------------------------------

def _floor(image: bytes, erased_sectors: List[int], written: Optional[Tuple[int, int]] = None) -> float:
    """Floor of erasing `erased_sectors` and programming `image[written]` (all of it by default), at x32."""
    sectors = sectors_for(FLASH_KB * KB)
    start, end = written if written is not None else (0, len(image))
    writes = program_writes(image[start:end], FLASH_START + start, protocol.PSIZE_X32)
    return floor_seconds([sectors[i] for i in erased_sectors], writes, protocol.PSIZE_X32)


def make_jobs(seed: int = SEED) -> List[Job]:
    image = random.Random(seed).randbytes(IMAGE_SIZE)
    other = random.Random(seed + 1).randbytes(IMAGE_SIZE)
    sector = sectors_for(FLASH_KB * KB)[CHANGED_SECTOR]
    changed = bytearray(image)
    at = sector.start - FLASH_START + sector.size // 2
    changed[at:at + CHANGED_BYTES] = random.Random(seed + 2).randbytes(CHANGED_BYTES)
    span = (sector.start - FLASH_START, sector.end - FLASH_START)
    return [
        Job("full", other, image, _floor(image, list(range(8))),
            "every sector held other data: erase sectors 0-7, program 512 KB, verify"),
        Job("identical", image, image, 0.0, "the chip already holds the image: nothing must change"),
        Job("one sector", image, bytes(changed), _floor(bytes(changed), [CHANGED_SECTOR], span),
            f"{CHANGED_BYTES} bytes differ in sector {CHANGED_SECTOR} (128 KB): erase and rewrite that sector"),
    ]


# --- a fresh virtual chip per run ------------------------------------------------------------------------

@contextmanager
def fresh_chip(before: bytes, link: str) -> Iterator[Path]:
    """A new state directory holding a 512 KB STM32F407 whose flash starts with `before`, selected through
    the environment (F4LOAD_SIM_STATE, F4LOAD_SIM_LINK; no faults) for the duration."""
    from f4load.sim import state as sim_state

    saved = {name: os.environ.get(name) for name in SIM_ENV}
    with tempfile.TemporaryDirectory(prefix="f4load-bench-") as directory:
        chip = sim_state.reset_state(directory)
        chip.flash[:len(before)] = before
        sim_state.save_state(chip, directory)
        os.environ.pop("F4LOAD_SIM_FAULTS", None)
        os.environ["F4LOAD_SIM_STATE"] = directory
        os.environ["F4LOAD_SIM_LINK"] = link
        try:
            yield Path(directory)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _stored_flash(directory: Path, size: int) -> bytes:
    from f4load.sim import state as sim_state

    return bytes(sim_state.load_state(directory, use_environment=False).flash[:size])


# --- the programmers -------------------------------------------------------------------------------------

def run_f4load(job: Job, link: str) -> Result:
    """f4load's product path: Session.program (CRCs, plan, erase/program stream, CRC verify)."""
    from f4load.image import load_image
    from f4load.session import Session

    with fresh_chip(job.before, link) as directory:
        path = directory / "app.bin"
        path.write_bytes(job.image)
        image = load_image(str(path))
        with Session(probe="sim", sim_link=link) as session:
            probe = session.pyocd.probe
            start_ps, start_commands = probe.clock.now_ps, probe.commands
            outcome = session.program(image)
            seconds = (probe.clock.now_ps - start_ps) / 1e12
            commands = probe.commands - start_commands
        ok = _stored_flash(directory, len(job.image)) == job.image
    return Result(job.name, F4LOAD, seconds, commands, job.floor_s,
                  "target CRC per sector" if outcome.verified else "not verified", ok)


def run_pyocd(job: Job, link: str, tool: str, install: Optional[Callable[[Any], Any]] = None) -> Result:
    """pyocd's FileProgrammer (default options) on the f4sim board, then the image read back through pyocd."""
    from pyocd.core.helpers import ConnectHelper
    from pyocd.flash.file_programmer import FileProgrammer

    with fresh_chip(job.before, link) as directory:
        session = ConnectHelper.session_with_chosen_probe(unique_id="f4sim", blocking=False,
                                                          options={"f4sim.link": link})
        if install is not None:
            install(session)
        with session:
            probe = session.probe
            start_ps, start_commands = probe.clock.now_ps, probe.commands
            FileProgrammer(session, progress=lambda _fraction: None).program(
                io.BytesIO(job.image), base_address=FLASH_START, file_format="bin")
            programmed_ps = probe.clock.now_ps
            read = bytes(session.target.read_memory_block8(FLASH_START, len(job.image)))
            end_ps = probe.clock.now_ps
            commands = probe.commands - start_commands
        ok = read == job.image and _stored_flash(directory, len(job.image)) == job.image
    return Result(job.name, tool, (end_ps - start_ps) / 1e12, commands, job.floor_s,
                  "read back 512 KB through pyocd", ok, verify_seconds=(end_ps - programmed_ps) / 1e12)


def peer_flm() -> Optional[Path]:
    from f4load.sim.peer import peer_flm_path

    return peer_flm_path()


def run_bench(link: str = DEFAULT_LINK, seed: int = SEED,
              say: Callable[[str], None] = lambda _line: None) -> BenchResult:
    """Every job with every programmer; then the acceptance checks."""
    from f4load.sim.peer import peer_flm_candidate, use_flm

    bench = BenchResult(link, seed)
    keil = peer_flm()
    for job in make_jobs(seed):
        runs: List[Callable[[], Result]] = [partial(run_f4load, job, link),
                                            partial(run_pyocd, job, link, PYOCD_STUB)]
        if keil is not None:
            runs.append(partial(run_pyocd, job, link, PYOCD_KEIL, partial(use_flm, flm_path=keil)))
        for run in runs:
            result = run()
            bench.results.append(result)
            say(format_result(result))
        if keil is None:
            bench.results.append(Result(job.name, PYOCD_KEIL, None, None, job.floor_s, "", False,
                                        f"peer FLM absent: {peer_flm_candidate()}"))
    full = bench.get("full", F4LOAD)
    assert full is not None and full.ratio is not None
    bench.checks.append((f"f4load full job {full.seconds:.3f} s = {full.ratio:.3f} x the floor "
                         f"{full.floor_s:.3f} s (limit {MAX_RATIO_TO_FLOOR:.2f} x), flash read back "
                         f"{'OK' if full.ok else 'WRONG'}", full.ratio <= MAX_RATIO_TO_FLOOR and full.ok))
    peer = bench.get("full", PYOCD_KEIL)
    if peer is not None and peer.seconds is not None and full.seconds:
        speedup = peer.seconds / full.seconds
        bench.checks.append((f"pyocd + Keil takes {speedup:.2f} x as long as f4load for the full job "
                             f"(limit {MIN_SPEEDUP_OVER_KEIL:.1f} x)", speedup >= MIN_SPEEDUP_OVER_KEIL))
    else:
        bench.checks.append(("pyocd + Keil not run (peer FLM absent): the 2 x check cannot pass", False))
    for result in bench.results:
        if result.seconds is not None and not result.ok:
            bench.checks.append((f"{result.tool}, {result.job}: the flash does not hold the image", False))
    return bench


# --- output ----------------------------------------------------------------------------------------------

def format_result(result: Result) -> str:
    if result.seconds is None:
        return f"  {result.job:<11} {result.tool:<32} not run: {result.note}"
    ratio = f"{result.ratio:6.3f} x floor" if result.ratio is not None else "  (floor 0 s)"
    return (f"  {result.job:<11} {result.tool:<32} {result.seconds:8.3f} s virtual {result.commands:7d} "
            f"commands  {ratio}  {'OK' if result.ok else 'FLASH WRONG'}")


LINK_TITLES = {"stlink-v2": "ST-Link/V2-1 (USB full speed, V2J40M27)",
               "stlink-v3": "STLINK-V3 (USB high speed, V3J13M4B3S1)"}


def markdown(bench: BenchResult, stlink: Sequence[BenchResult] = ()) -> str:
    """docs/bench.md: no date, so the file changes only when the numbers do. `bench` is the in-process route,
    `stlink` one result per virtual ST-Link (bench_stlink.py)."""
    jobs = {job.name: job for job in make_jobs(bench.seed)}
    lines = [
        "# Benchmark: f4load, pyocd and OpenOCD on the virtual STM32F407",
        "",
        f"Written by `invoke bench` (`host/f4load/bench.py`, `bench_stlink.py`). Image **512 KB** of random bytes "
        f"(Python `random.Random({bench.seed}).randbytes`, seed **{bench.seed}**) at 0x0800_0000; a 512 KB "
        "STM32F407VE, a fresh state directory per run. Times are virtual seconds on the chip's clock from the "
        "start of the work to its end (connecting left out), link included. The floor is the least time the "
        "flash itself needs for what must change (DS8626 Table 40 typical: 16 us per x32 write, 0.25/0.55/1.0 s "
        "per 16/64/128 KB sector erase; `f4load.floor`).",
        "",
    ]
    if stlink:
        lines += _stlink_section(stlink, jobs)
    lines += [f"## In process: the pyocd plugin f4sim, link model {bench.link} per probe call", "",
              "pyocd drives the chip in its own process through the `f4sim` probe plugin, which charges 1 ms and "
              "the SWD time of the data (4 MHz) per pyocd probe call (`sim/clock.py`), whatever USB "
              "transactions a real ST-Link would need for it.", "",
              "- **f4load**: `f4load.session.Session.program` (what `f4load app.bin` runs): a CRC of every "
              "touched sector by the target, plan, the stub stream, a CRC of every rewritten sector (\"in "
              "stream\": the verify CRCs run at the end of the same stream, 512 KB in about 25 ms).",
              "- **pyocd + f4load stub**: pyocd's FileProgrammer (default options) with f4load's stub as pyocd's "
              "flash algorithm (target type `f4load_stm32f407xe`), then the image read back through pyocd.",
              "- **pyocd + Keil STM32F4xx_2048.FLM**: the same with Keil's algorithm (`f4load.sim.peer.use_flm`).",
              ""]
    for name in JOBS:
        lines += _job_table(bench, jobs[name], "###", "probe commands")
    lines += _closing_note(bench, stlink)
    lines += ["## Acceptance (issue 4)", ""]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in bench.checks]
    for result in stlink:
        lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in result.checks]
    return "\n".join(lines) + "\n"


def _job_table(bench: BenchResult, job: Job, level: str, commands: str) -> List[str]:
    floor = f"floor {job.floor_s:.3f} s" if job.floor_s > 0 else "floor 0 s"
    lines = [f"{level} {job.name}: {job.what} ({floor})", "",
             f"| programmer | virtual s | of which verify | {commands} | x floor | x floor without verify | "
             "verified by | flash afterwards |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for result in (r for r in bench.results if r.job == job.name):
        if result.seconds is None or result.commands is None:
            lines.append(f"| {result.tool} | - | - | - | - | - | {result.note} | - |")
            continue
        ratio = f"{result.ratio:.3f}" if result.ratio is not None else "-"
        bare = result.ratio_without_verify
        without = f"{bare:.3f}" if bare is not None else "-"
        verify = f"{result.verify_seconds:.3f}" if result.verify_seconds is not None else "in stream"
        lines.append(f"| {result.tool} | {result.seconds:.3f} | {verify} | {result.commands:,} | {ratio} | "
                     f"{without} | {result.verified} | {'the image' if result.ok else 'WRONG'} |")
    return lines + [""]


def _stlink_section(stlink: Sequence[BenchResult], jobs: Dict[str, Job]) -> List[str]:
    lines = ["## Through the virtual ST-Link: every programmer in one virtual clock", "",
             "`f4load-sim serve` puts an ST-Link in front of the virtual chip; each programmer talks to it over the "
             "ST-Link TCP server protocol with its own, unmodified driver (pyocd's `StlinkProbe`/`STLink` through "
             "the `stlink-tcp` plugin, OpenOCD's hla and stlink-dap drivers), and every USB command it sends costs "
             "one transaction on the board's clock: latency (1 ms on the V2-1, 250 us on the V3) + USB payload + "
             "the SWD transfers at the clock the client chose (docs/sim.md, \"The ST-Link route\"). USB commands "
             "are counted by the virtual ST-Link. Each programmer runs at the SWD clock it asks for by default, as "
             "its driver maps it onto the ST-Link's steps: f4load asks 4 MHz, which pyocd's ST-Link driver turns "
             "into 1.8 MHz on a V2 (its table calls the fastest divisor 4.6 MHz) and 3.3 MHz on a V3; pyocd "
             "alone asks 1 MHz (950 kHz on a V2); OpenOCD's stm32f4x.cfg asks 2 MHz, then 8 MHz after `reset "
             "init` (4 MHz on a V2). The `24 MHz SWD asked` row is f4load with `frequency` 24 MHz (4 MHz on a "
             "V2, 24 MHz on a V3).", "",
             "OpenOCD is timed over `flash write_image erase` + `verify_image` (what `program FILE verify` runs) "
             "after `init`/`reset init`; it rewrites every sector the image covers, whatever the chip holds. Its "
             "`reset init` switches the core to a 64 MHz PLL that the virtual chip does not model (it stays at "
             "16 MHz), so OpenOCD's target-side CRC (`verify_image`) and loader loop are charged up to 4 x their "
             "real time. Host-side sleeps (OpenOCD's 1 ms between FLASH_SR polls and 2 ms on a full FIFO) are "
             "not charged: virtual time passes per transaction only.", ""]
    for bench in stlink:
        lines += [f"### {LINK_TITLES.get(bench.link, bench.link)}", ""]
        for name in JOBS:
            lines += _job_table(bench, jobs[name], "####", "USB commands")
    return lines


def _closing_note(bench: BenchResult, stlink: Sequence[BenchResult]) -> List[str]:
    """The 512 KB job in a few lines: f4load vs OpenOCD vs pyocd + Keil, and the two routes compared."""
    lines = ["## The 512 KB job (full) in short", ""]
    in_process = bench.get("full", F4LOAD)
    for route in stlink:
        parts = []
        for tool in (F4LOAD, "OpenOCD 0.12 hla", "OpenOCD 0.12 stlink-dap", PYOCD_KEIL):
            result = route.get("full", tool)
            if result is not None and result.seconds is not None and result.commands is not None:
                ratio = f", {result.ratio:.2f} x floor" if result.ratio is not None else ""
                parts.append(f"{tool} {result.seconds:.2f} s / {result.commands:,} USB commands{ratio}")
        if parts:
            lines.append(f"- {LINK_TITLES.get(route.link, route.link)}: " + "; ".join(parts) + ".")
    if in_process is None or in_process.seconds is None or in_process.ratio is None:
        return lines + [""]
    routes = [(route.link, route.get("full", F4LOAD)) for route in stlink]
    shown = [f"{r.seconds:.2f} s = {r.ratio:.2f} x floor through the {link}" for link, r in routes
             if r is not None and r.seconds is not None and r.ratio is not None]
    lines += [
        f"- f4load, the two routes: {in_process.seconds:.2f} s = {in_process.ratio:.2f} x floor in process "
        f"({in_process.commands:,} probe calls at 1 ms each)" + (", " + ", ".join(shown) if shown else "") + ".",
        "- What differs for the same job: in process every pyocd probe call costs 1 ms plus its data at 4 MHz; "
        "through the ST-Link every memory access is two USB commands (the access, then GETLASTRWSTATUS2: 2 ms "
        "on a V2, 0.5 ms on a V3), a DP/AP register access one, and the data moves at the SWD clock pyocd's "
        "driver picks (1.8 MHz on a V2, 3.3 MHz on a V3, for f4load's 4 MHz). Polling loops (f4load waiting on "
        "the stub's mailbox, pyocd on its algorithm, OpenOCD on FLASH_SR) therefore make fewer polls through a "
        "V2 and more through a V3 than in process, which the USB command counts show; f4load's total moves "
        "little because its transfers overlap the flash's own work, while pyocd's read-back verify and the "
        "algorithm-call round trips of the FLM routes are charged in full.",
        "- OpenOCD's stm32f2x driver erases at the PSIZE left after reset (x8) and programs at x16, both slower "
        "than x32 (DS8626 Table 40), and rewrites every sector of the image: its floor-relative time is about "
        "2.3 x whatever the chip held.",
    ]
    return lines + [""]


def results_by_tool(bench: BenchResult) -> Dict[str, Dict[str, Result]]:
    out: Dict[str, Dict[str, Result]] = {}
    for result in bench.results:
        out.setdefault(result.tool, {})[result.job] = result
    return out
