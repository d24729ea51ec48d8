"""`invoke bench`: f4load against pyocd on the virtual STM32F407, in virtual seconds and probe commands.

Jobs, each with a random image from a fixed seed (the same bytes every run, so the table is reproducible) on a
fresh virtual chip holding the "chip before" contents:

| job | part | chip before | image | programmers |
|---|---|---|---|---|
| `full` | 512 KB | every sector holds other data (another seed) | 512 KB: erase 0-7, program, verify | all |
| `identical` | 512 KB | already holds the image | the same image again: nothing needs to change | all |
| `one sector` | 512 KB | holds the image | the image with 256 bytes changed in sector 5 (128 KB) | all |
| `full 1 MB` | 1 MB | other data | 1 MB: one mass erase (8 s), program, verify | f4load |
| `sparse` | 512 KB | other data | Intel HEX, 3 regions in sectors 0, 5 and 7, the bytes around them kept | f4load |
| `blank sector` | 512 KB | other data, sector 1 blank | 16 KB into sector 1: program without erase | f4load |

and programmers, each run in its own fresh state directory prepared with the "chip before" contents:

- **f4load**: the product path, `f4load.session.Session.program` (sector CRCs, plan, stream, CRC verify);
- **pyocd + f4load stub**: pyocd's `FileProgrammer` with its default options on the f4sim board, whose
  target type (`f4load_stm32f407xe`) uses f4load's stub as pyocd's flash algorithm, at the SWD clock f4load
  asks for (`session.DEFAULT_SWD_HZ`, pyocd's `frequency` option), so that the two compare at the same link
  speed; then the image is read back through pyocd, since pyocd has no verify step of its own;
- **pyocd + Keil FLM**: the same with pyocd's default SWD clock, with Keil's `STM32F4xx_2048.FLM` installed by
  `f4load.sim.peer.use_flm` (skipped, and said so, when the peer file is absent).

Each is measured on the probe's clock and command counter from the start of the work to its end (connecting
is left out, for all alike). The **floor** of a job is the least time the flash itself needs for what must
change (DS8626 Table 40 typical, `f4load.floor`): for `full` the erase of sectors 0-7 and 131,072 x32 writes,
6.65 s; for `full 1 MB` one mass erase (8 s, less than the 8.55 s of the sector erases) and 262,144 writes;
for `sparse` the erase and rewrite of sectors 0, 5 and 7 (every kept byte is written again); for `blank sector`
4,096 writes; for `identical` nothing (0 s, so no ratio). After every run the whole flash is checked against
what it must hold: the image, the bytes kept around it, every other sector unchanged.

Acceptance: issue 4 (f4load's `full` job within 1.10 x the floor, at least 2 x faster than pyocd + Keil) and
issue 11 (`ISSUE_11_LIMITS`). `run_bench` returns the table and the checks; `tasks.py` prints them, writes the
markdown to `docs/bench.md` and exits non-zero when a check fails.
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
# The sparse job: (sector, offset in it, bytes) of its three regions.
SPARSE_REGIONS = ((0, 0, 4 * KB), (5, 0x1000, 2 * KB), (7, 0x10000, 256))
BLANK_SECTOR = 1
# Acceptance limits (issue 4).
MAX_RATIO_TO_FLOOR = 1.10
MIN_SPEEDUP_OVER_KEIL = 2.0

F4LOAD = "f4load"
PYOCD_STUB = "pyocd + f4load stub"
PYOCD_KEIL = "pyocd + Keil STM32F4xx_2048.FLM"
FULL, IDENTICAL, ONE_SECTOR, FULL_1MB, SPARSE, BLANK = (
    "full", "identical", "one sector", "full 1 MB", "sparse", "blank sector")
JOBS = (FULL, IDENTICAL, ONE_SECTOR, FULL_1MB, SPARSE, BLANK)
# Acceptance limits (issue 11): (job, programmer, "x floor" or "s", limit, without the read-back verify).
ISSUE_11_LIMITS = ((FULL, F4LOAD, "x floor", 1.02, False), (FULL_1MB, F4LOAD, "x floor", 1.03, False),
                   (SPARSE, F4LOAD, "x floor", 1.10, False), (BLANK, F4LOAD, "s", 0.12, False),
                   (IDENTICAL, F4LOAD, "s", 0.08, False), (FULL, PYOCD_STUB, "x floor", 1.12, True))
# Through the virtual ST-Link (issue 11): f4load's full job.
STLINK_FULL_LIMIT = 1.04
SIM_ENV = ("F4LOAD_SIM_STATE", "F4LOAD_SIM_LINK", "F4LOAD_SIM_FAULTS")


@dataclass(frozen=True)
class Job:
    name: str
    before: bytes   # the flash contents (the whole part) before the job
    segments: Tuple[Tuple[int, bytes], ...]  # (address, data) of the image
    floor_s: float  # DS8626 typical floor of what must change
    what: str
    flash_kb: int = FLASH_KB
    hex_file: bool = False  # the image as an Intel HEX file (else a raw binary)
    all_programmers: bool = True  # pyocd too (else f4load only)

    @property
    def image(self) -> bytes:
        """The bytes of a one-segment image at FLASH_START (the pyocd runs program a raw binary)."""
        assert len(self.segments) == 1 and self.segments[0][0] == FLASH_START
        return self.segments[0][1]

    @property
    def expected(self) -> bytes:
        """What the whole flash must hold afterwards: the image, and everything else as it was (bytes kept)."""
        out = bytearray(self.before)
        for address, data in self.segments:
            out[address - FLASH_START:address - FLASH_START + len(data)] = data
        return bytes(out)

    def write_file(self, directory: Path) -> Path:
        """The image as the file a user would program: app.hex, or app.bin (at FLASH_START)."""
        if self.hex_file:
            import bincopy

            records = bincopy.BinFile()
            for address, data in self.segments:
                records.add_binary(data, address=address)
            path = directory / "app.hex"
            path.write_text(records.as_ihex())
            return path
        path = directory / "app.bin"
        path.write_bytes(self.image)
        return path


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

def _floor(image: bytes, erased_sectors: List[int], written: Optional[Tuple[int, int]] = None,
           flash_kb: int = FLASH_KB) -> float:
    """Floor of erasing `erased_sectors` and programming `image[written]` (all of it by default), at x32."""
    sectors = sectors_for(flash_kb * KB)
    start, end = written if written is not None else (0, len(image))
    writes = program_writes(image[start:end], FLASH_START + start, protocol.PSIZE_X32)
    return floor_seconds([sectors[i] for i in erased_sectors], writes, protocol.PSIZE_X32)


def make_jobs(seed: int = SEED) -> List[Job]:
    image = random.Random(seed).randbytes(IMAGE_SIZE)
    other = random.Random(seed + 1).randbytes(IMAGE_SIZE)
    sectors = sectors_for(FLASH_KB * KB)
    sector = sectors[CHANGED_SECTOR]
    changed = bytearray(image)
    at = sector.start - FLASH_START + sector.size // 2
    changed[at:at + CHANGED_BYTES] = random.Random(seed + 2).randbytes(CHANGED_BYTES)
    span = (sector.start - FLASH_START, sector.end - FLASH_START)
    image_1m = random.Random(seed).randbytes(1024 * KB)
    other_1m = random.Random(seed + 1).randbytes(1024 * KB)
    sparse = tuple((sectors[i].start + offset, random.Random(seed + 10 + i).randbytes(size))
                   for i, offset, size in SPARSE_REGIONS)
    sparse_after = bytearray(other)
    for address, data in sparse:
        sparse_after[address - FLASH_START:address - FLASH_START + len(data)] = data
    blank = sectors[BLANK_SECTOR]
    with_blank = bytearray(other)
    with_blank[blank.start - FLASH_START:blank.end - FLASH_START] = b"\xff" * blank.size
    blank_data = random.Random(seed + 20).randbytes(blank.size)
    regions = ", ".join(f"{size:,} B in sector {i}" for i, _, size in SPARSE_REGIONS)
    sparse_floor = sum(_floor(bytes(sparse_after), [i], (sectors[i].start - FLASH_START,
                                                          sectors[i].end - FLASH_START)) for i, _, _ in SPARSE_REGIONS)
    return [
        Job(FULL, other, ((FLASH_START, image),), _floor(image, list(range(8))),
            "every sector held other data: erase sectors 0-7, program 512 KB, verify"),
        Job(IDENTICAL, image, ((FLASH_START, image),), 0.0,
            "the chip already holds the image: nothing must change"),
        Job(ONE_SECTOR, image, ((FLASH_START, bytes(changed)),),
            _floor(bytes(changed), [CHANGED_SECTOR], span),
            f"{CHANGED_BYTES} bytes differ in sector {CHANGED_SECTOR} (128 KB): erase and rewrite that sector"),
        Job(FULL_1MB, other_1m, ((FLASH_START, image_1m),), _floor(image_1m, list(range(12)), flash_kb=1024),
            "a 1 MB part (STM32F407VG) whose every sector held other data: one mass erase, program 1 MB, verify",
            flash_kb=1024, all_programmers=False),
        Job(SPARSE, other, sparse, sparse_floor,
            f"an Intel HEX file with 3 regions ({regions}) over other data: erase sectors 0, 5 and 7 and write "
            "them again with the bytes around the regions kept", hex_file=True, all_programmers=False),
        Job(BLANK, bytes(with_blank), ((blank.start, blank_data),),
            floor_seconds([], program_writes(blank_data, blank.start, protocol.PSIZE_X32), protocol.PSIZE_X32),
            f"16 KB into sector {BLANK_SECTOR}, blank (the rest of the chip other data): program without erase",
            hex_file=True, all_programmers=False),
    ]


# --- a fresh virtual chip per run ------------------------------------------------------------------------

def prepare_chip(directory: Path, job: Job) -> None:
    """The job's "chip before" in a state directory: a part of `job.flash_kb` holding `job.before`."""
    from f4load.sim import state as sim_state
    from f4load.sim.faults import Faults

    chip = sim_state.reset_state(directory, faults=Faults(flash_kb=job.flash_kb))
    chip.flash[:len(job.before)] = job.before
    sim_state.save_state(chip, directory)


def flash_holds(directory: Path, job: Job) -> bool:
    """After a run: the whole flash holds what the job must leave (the image, kept bytes, the rest unchanged)."""
    from f4load.sim import state as sim_state

    return bytes(sim_state.load_state(directory, use_environment=False).flash) == job.expected


@contextmanager
def fresh_chip(job: Job, link: str) -> Iterator[Path]:
    """A new state directory holding the job's chip before (`prepare_chip`), selected through the environment
    (F4LOAD_SIM_STATE, F4LOAD_SIM_LINK; no faults) for the duration."""
    saved = {name: os.environ.get(name) for name in SIM_ENV}
    with tempfile.TemporaryDirectory(prefix="f4load-bench-") as directory:
        prepare_chip(Path(directory), job)
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


# --- the programmers -------------------------------------------------------------------------------------

def run_f4load(job: Job, link: str) -> Result:
    """f4load's product path: Session.program (CRCs, plan, erase/program stream, CRC verify)."""
    from f4load.image import load_image
    from f4load.session import Session

    with fresh_chip(job, link) as directory:
        image = load_image(str(job.write_file(directory)))
        with Session(probe="sim", sim_link=link, backup_dir=directory / "backups") as session:
            probe = session.pyocd.probe
            start_ps, start_commands = probe.clock.now_ps, probe.commands
            outcome = session.program(image)
            seconds = (probe.clock.now_ps - start_ps) / 1e12
            commands = probe.commands - start_commands
        ok = flash_holds(directory, job)
    return Result(job.name, F4LOAD, seconds, commands, job.floor_s,
                  "target CRC per sector" if outcome.verified else "not verified", ok and bool(outcome.verified))


def run_pyocd(job: Job, link: str, tool: str, install: Optional[Callable[[Any], Any]] = None,
              frequency: Optional[int] = None) -> Result:
    """pyocd's FileProgrammer (default options, and `frequency` if given) on the f4sim board, then the image read
    back through pyocd."""
    from pyocd.core.helpers import ConnectHelper
    from pyocd.flash.file_programmer import FileProgrammer

    options: Dict[str, Any] = {"f4sim.link": link}
    if frequency is not None:
        options["frequency"] = frequency
    with fresh_chip(job, link) as directory:
        session = ConnectHelper.session_with_chosen_probe(unique_id="f4sim", blocking=False, options=options)
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
        ok = read == job.image and flash_holds(directory, job)
    return Result(job.name, tool, (end_ps - start_ps) / 1e12, commands, job.floor_s,
                  "read back 512 KB through pyocd", ok, verify_seconds=(end_ps - programmed_ps) / 1e12)


def peer_flm() -> Optional[Path]:
    from f4load.sim.peer import peer_flm_path

    return peer_flm_path()


def record_runs(bench: BenchResult, job: Job, runs: Sequence[Callable[[], Result]], keil_absent: bool,
                say: Callable[[str], None]) -> None:
    """Run a job's rows in order, recording and printing each; when the Keil peer is absent, a row that says so."""
    from f4load.sim.peer import peer_flm_candidate

    for run in runs:
        result = run()
        bench.results.append(result)
        say(format_result(result))
    if job.all_programmers and keil_absent:
        bench.results.append(Result(job.name, PYOCD_KEIL, None, None, job.floor_s, "", False,
                                    f"peer FLM absent: {peer_flm_candidate()}"))


def run_bench(link: str = DEFAULT_LINK, seed: int = SEED,
              say: Callable[[str], None] = lambda _line: None) -> BenchResult:
    """Every job with every programmer; then the acceptance checks."""
    from f4load.session import DEFAULT_SWD_HZ
    from f4load.sim.peer import use_flm

    bench = BenchResult(link, seed)
    keil = peer_flm()
    for job in make_jobs(seed):
        runs: List[Callable[[], Result]] = [partial(run_f4load, job, link)]
        if job.all_programmers:
            runs.append(partial(run_pyocd, job, link, PYOCD_STUB, frequency=DEFAULT_SWD_HZ))
            if keil is not None:
                runs.append(partial(run_pyocd, job, link, PYOCD_KEIL, partial(use_flm, flm_path=keil)))
        record_runs(bench, job, runs, keil_absent=keil is None, say=say)
    full = bench.get(FULL, F4LOAD)
    assert full is not None and full.ratio is not None
    bench.checks.append((f"f4load full job {full.seconds:.3f} s = {full.ratio:.3f} x the floor "
                         f"{full.floor_s:.3f} s (limit {MAX_RATIO_TO_FLOOR:.2f} x), flash read back "
                         f"{'OK' if full.ok else 'WRONG'}", full.ratio <= MAX_RATIO_TO_FLOOR and full.ok))
    peer = bench.get(FULL, PYOCD_KEIL)
    if peer is not None and peer.seconds is not None and full.seconds:
        speedup = peer.seconds / full.seconds
        bench.checks.append((f"pyocd + Keil takes {speedup:.2f} x as long as f4load for the full job "
                             f"(limit {MIN_SPEEDUP_OVER_KEIL:.1f} x)", speedup >= MIN_SPEEDUP_OVER_KEIL))
    else:
        bench.checks.append(("pyocd + Keil not run (peer FLM absent): the 2 x check cannot pass", False))
    bench.checks += issue_11_checks(bench)
    for result in bench.results:
        if result.seconds is not None and not result.ok:
            bench.checks.append((f"{result.tool}, {result.job}: the flash does not hold what it must", False))
    return bench


def issue_11_checks(bench: BenchResult) -> List[Tuple[str, bool]]:
    """The limits of issue 11 (ISSUE_11_LIMITS), one check each."""
    checks = []
    for job, tool, unit, limit, bare in ISSUE_11_LIMITS:
        result = bench.get(job, tool)
        if result is None or result.seconds is None:
            checks.append((f"issue 11: {tool}, {job}: not run", False))
            continue
        what = f"{tool}, {job}" + (" without the read-back verify" if bare else "")
        if unit == "s":
            value, shown = result.seconds, f"{result.seconds:.3f} s (limit {limit:.2f} s)"
        else:
            ratio = result.ratio_without_verify if bare else result.ratio
            assert ratio is not None
            value, shown = ratio, f"{ratio:.3f} x the floor {result.floor_s:.3f} s (limit {limit:.2f} x)"
        checks.append((f"issue 11: {what}: {shown}", value <= limit and result.ok))
    return checks


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
        f"Written by `invoke bench` (`host/f4load/bench.py`, `bench_stlink.py`). Images of random bytes "
        f"(Python `random.Random(seed).randbytes`, seed **{bench.seed}** and up): 512 KB at 0x0800_0000 on a "
        "512 KB STM32F407VE for the first three jobs, with every programmer; then, f4load only, 1 MB on a 1 MB "
        "STM32F407VG, a sparse Intel HEX file and 16 KB into a blank sector. A fresh state directory per run. "
        "Times are virtual seconds on the chip's clock from the start of the work to its end (connecting left "
        "out), link included. The floor is the least time the flash itself needs for what must change (DS8626 "
        "Table 40 typical: 16 us per x32 write, 0.25/0.55/1.0 s per 16/64/128 KB sector erase, 8 s for a mass "
        "erase; `f4load.floor`). After every run the whole flash is checked: the image, the bytes kept around "
        "it, every other sector unchanged (\"flash afterwards\").",
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
              "- **pyocd + f4load stub**: pyocd's FileProgrammer (default options, and the SWD clock f4load asks "
              "for: `frequency` 8 MHz, 4 MHz on this link, as f4load) with f4load's stub as pyocd's flash "
              "algorithm (target type `f4load_stm32f407xe`), then the image read back through pyocd.",
              "- **pyocd + Keil STM32F4xx_2048.FLM**: the same with Keil's algorithm (`f4load.sim.peer.use_flm`) "
              "at pyocd's default SWD clock.",
              ""]
    for name in JOBS:
        lines += _job_table(bench, jobs[name], "###", "probe commands")
    lines += _closing_note(bench, stlink)
    lines += ["## Acceptance (issues 4 and 11)", ""]
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
             "its driver maps it onto the ST-Link's steps: f4load asks 8 MHz, which pyocd's ST-Link driver turns "
             "into 4 MHz on a V2 (its table calls that divisor 4.6 MHz) and 8 MHz on a V3, and the pyocd + f4load "
             "stub row is asked for the same, so that the two compare at one link speed; pyocd alone asks 1 MHz "
             "(950 kHz on a V2); OpenOCD's stm32f4x.cfg asks 2 MHz, then 8 MHz after `reset init` (4 MHz on a "
             "V2). The `24 MHz SWD asked` row is f4load with `frequency` 24 MHz (4 MHz on a V2, 24 MHz on a V3).",
             "",
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
    for route_name, route in [("in process", bench)] + [(LINK_TITLES.get(r.link, r.link), r) for r in stlink]:
        lines += _headline(route_name, route)
    routes = [(route.link, route.get("full", F4LOAD)) for route in stlink]
    shown = [f"{r.seconds:.2f} s = {r.ratio:.2f} x floor through the {link}" for link, r in routes
             if r is not None and r.seconds is not None and r.ratio is not None]
    lines += [
        f"- f4load, the two routes: {in_process.seconds:.2f} s = {in_process.ratio:.2f} x floor in process "
        f"({in_process.commands:,} probe calls at 1 ms each)" + (", " + ", ".join(shown) if shown else "") + ".",
        "- What differs for the same job: in process every pyocd probe call costs 1 ms plus its data at 4 MHz; "
        "through the ST-Link every memory access is two USB commands (the access, then GETLASTRWSTATUS2: 2 ms "
        "on a V2, 0.5 ms on a V3), a DP/AP register access one, and the data moves at the SWD clock pyocd's "
        "driver picks (4 MHz on a V2, 8 MHz on a V3, for f4load's 8 MHz). Polling loops (f4load waiting on "
        "the stub's mailbox, pyocd on its algorithm, OpenOCD on FLASH_SR) therefore make fewer polls through a "
        "V2 and more through a V3 than in process, which the USB command counts show; f4load's total moves "
        "little because its transfers overlap the flash's own work, while pyocd's read-back verify and the "
        "algorithm-call round trips of the FLM routes are charged in full.",
        "- OpenOCD's stm32f2x driver erases at the PSIZE left after reset (x8) and programs at x16, both slower "
        "than x32 (DS8626 Table 40), and rewrites every sector of the image: its floor-relative time is about "
        "2.3 x whatever the chip held.",
    ]
    return lines + [""]


def _headline(route_name: str, bench: BenchResult) -> List[str]:
    """f4load against the pyocd routes on the full job, with and without the read-back verify pyocd's harness adds
    (f4load's verify is a target CRC inside its stream, so it has no separate step)."""
    ours = bench.get(FULL, F4LOAD)
    if ours is None or not ours.seconds:
        return []
    parts = []
    for tool in (PYOCD_STUB, PYOCD_KEIL):
        theirs = bench.get(FULL, tool)
        if theirs is None or theirs.seconds is None:
            continue
        bare = theirs.seconds - (theirs.verify_seconds or 0.0)
        parts.append(f"{tool} takes {theirs.seconds / ours.seconds:.2f} x as long as f4load "
                     f"({bare / ours.seconds:.2f} x without its read-back verify; "
                     f"{bare / theirs.floor_s:.3f} x the floor)")
    if not parts:
        return []
    return [f"- {route_name}, full job: " + "; ".join(parts) + "."]


def results_by_tool(bench: BenchResult) -> Dict[str, Dict[str, Result]]:
    out: Dict[str, Dict[str, Result]] = {}
    for result in bench.results:
        out.setdefault(result.tool, {})[result.job] = result
    return out
