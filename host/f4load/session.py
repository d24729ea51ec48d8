"""The session step of f4load's data flow: a probe, a connected and identified target, and the flash work on it.

    file -> image -> plan -> stub protocol -> **session** (probe, target, stream) -> flash

`Session` is a context manager around one pyocd session:

1. **Connect** through pyocd: the probe is chosen by `f4load.probes` (`probe=None` or `"auto"`: the one real
   probe attached; `"sim"`/`"sim:NAME"`: the virtual STM32F407, pyocd probe `f4sim`, docs/sim.md; anything
   else a pyocd probe unique ID: ST-Link, CMSIS-DAP, J-Link...) and opened in a pyocd `Session` of its own,
   with the SWD clock at `frequency` (default `DEFAULT_SWD_HZ`). The target type is pyocd's generic
   `cortex_m`: f4load never uses pyocd's flash algorithms, it loads its own stub (`f4load.stream`) and needs
   nothing from pyocd but memory and core access.
   The connection is made **under reset** by default (pyocd `connect_mode="under-reset"`): NRST is held low
   while the debugger attaches and the core is halted at its reset vector, before one instruction of the
   application runs. An application can otherwise get in the way of flashing: it may turn the SWD pins into
   GPIOs or enter a low-power mode (the debugger loses the target), start the IWDG (which cannot be stopped and
   resets the chip mid-erase), or leave sticky FLASH_SR error flags or a FLASH_CR locked by a wrong key until
   the next reset (RM0090 3.5.1, 3.7.4). `connect="halt"` halts without a reset, `connect="attach"` leaves the
   core running.
2. **Identify** the part (`TargetInfo`): DBGMCU_IDCODE DEV_ID must be 0x413 (STM32F405/407/415/417, RM0090
   38.6.1) or `TargetIdentityError` names what was found; F_SIZE (0x1FFF_7A22) gives the flash size and so the
   `Part` (sector map); REV_ID and the CoreSight ROM table's JEP106 designer are checked against ST's (a clone
   is reported as a warning); the unique ID and the option bytes (FLASH_OPTCR, RM0090 3.8.6) are read.
   VDD is read from the probe where it can measure it (`probe_supply_voltage`); otherwise 3.3 V is assumed
   and `TargetInfo.vdd_source` says so. The parallelism follows from it (`protocol.psize_for_voltage`,
   RM0090 Table 13).
3. **Work**: `program()`, `erase()`, `verify()`, `read()` below. Every flash operation goes through the stub's
   streaming entry point (`f4load.stream.StubRunner`); this module decides what to ask for and checks what
   came back. One command loads the stub once and runs it once (one batch: Init, Stream, UnInit):
   `program` (f4load.job) starts with the sector CRCs and queues the erases, copies, program chunks and
   verify CRCs behind them as it decides, while the stub runs; `erase` queues its erases behind its CRCs.
   While a runner is live nothing else may run code in SRAM (`set_option_bytes` refuses: its wait loop lives
   in the stub's buffer area).
4. **Leave** the target in a known state whatever happened: the stub stopped (core halted), FLASH_CR locked,
   then - with `reset_run` - a reset that lets the application run, else the core stays halted.

Nothing is erased before every check that can be made without erasing has passed: the image fits the part,
read-out protection is off, no sector to be changed is write-protected (nWRP), the sectors asked for exist,
and - when the application ran (`connect="halt"`/`"attach"`) - no peripheral it left running can get in the
way of the stub (see "Peripherals the application left running" below).

Reliability
-----------

* **Ctrl-C / SIGTERM** are only recorded from `open()` to `close()` (f4load.interrupt) and raised as
  `interrupt.Interrupted` at the safe points: before the stub loads, before each batch, between the blocks of
  a read, and in the stream after the stub command in progress (f4load.stream). Afterwards the core is halted
  and FLASH_CR locked; `close()` then does not reset-and-run.
* **Parallelism**: the widest the measured VDD allows, or `psize=` ("x8"...) - refused before anything is
  erased when VDD does not allow it. A reset or OPERR at a wider one names `--psize x8` in its report.
* **The CRC unit** gets a known-answer check before the first CRC is trusted: every batch of the stub makes it
  when it starts (f4load.stream, no extra round trip), `crc_unit()` through the debugger for `diagnose`; when
  it fails, sector CRCs and verification compare read-back data instead.
* **The run journal** (f4load.journal): every `program`, `erase`, `verify` appends its outcome, the
  operation and sector in progress, FLASH_SR bits and reset causes to this chip's journal (`journaled()`).
* `strict_identity=False` (`f4load diagnose`) keeps identity problems in `TargetInfo.identity_problems`
  instead of refusing the connection.

Bytes kept around the image are copied on the target and written to a backup file before their sector's erase
(f4load.backup); peripherals an application left running that would get in the stub's way (a WWDG, a DMA
stream) refuse the work before anything is loaded (f4load.running_peripherals).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from pyocd.core import exceptions as pyocd_errors

from f4load import interrupt, journal, option_bytes, probes, protocol, reset_causes, stream
from f4load.backup import BACKUP_ATTRIBUTE, BACKUP_DIR_ENV, backup_directory, rewrite_backup, write_backup
from f4load.crc import KNOWN_ANSWER, CrcUnitCheck, check_crc_unit, stm32_crc32
from f4load.errors import (  # noqa: F401 - re-exported: the session's errors, where callers expect them
    ConnectError,
    F4LoadError,
    LinkError,
    ProtectionError,
    SessionError,
    TargetIdentityError,
    UsageError,
    VerifyError,
)
from f4load.floor import PSIZE_NAMES, floor_seconds, mass_erase_is_faster, program_writes  # noqa: F401
from f4load.identity import TargetInfo, clone_warnings, describe_jep106, read_identity  # noqa: F401
from f4load.image import Image
from f4load.job import ProgramJob
from f4load.option_bytes import OptionBytes, sector_ranges  # noqa: F401 - re-exported
from f4load.part import KB, Part, Sector
from f4load.plan import Action, Plan, blank_crc
from f4load.pyocd_targets import probe_supply_voltage
from f4load.registers import (
    DBGMCU_APB1_FZ,
    DBGMCU_APB1_FZ_DBG_IWDG_STOP,
    FLASH_CR,
    FLASH_CR_LOCK,
    FLASH_SR,
    FLASH_SR_BSY,
    RCC_CSR,
    RESET_FLAG_NAMES,
    RESET_FLAGS,
)
from f4load.running_peripherals import peripheral_hazards, read_running_peripherals
from f4load.stub_image import StubImage

LOG = logging.getLogger(__name__)

SIM_PROBE = probes.SIM
SIM_LINK_OPTION = "f4sim.link"
# The SWD clock asked of the probe unless told otherwise. A probe runs at its fastest step not above the request:
# 8 MHz gives an ST-Link/V2 its fastest divisor (4 MHz; pyocd's ST-Link driver labels it 4.6 MHz, so asking
# "4 MHz" would get 1.8 MHz) and an ST-Link/V3 8 MHz, the two STM32CubeProgrammer defaults, and OpenOCD's
# stm32f4x.cfg runs at 8 MHz too once the target is initialised. pyocd's own default, 1 MHz, makes an ST-Link/V2
# run at 950 kHz, and a 512 KB image then takes longer to move over SWD than the flash takes to program it.
# Long flying leads may need less (`--frequency 1.8M`); an ST-Link/V3 on short leads does 24 MHz.
DEFAULT_SWD_HZ = 8_000_000
CONNECT_MODES = ("under-reset", "halt", "attach")
ASSUMED_VDD = 3.3
# Parallelism by name, and the lowest VDD each works at (RM0090 Table 13).
PSIZE_BY_NAME = {name: psize for psize, name in PSIZE_NAMES.items()}
PSIZE_MIN_VDD = {protocol.PSIZE_X8: 1.8, protocol.PSIZE_X16: 2.1, protocol.PSIZE_X32: 2.7}

# Largest single memory read asked of pyocd at once (it splits further for the probe).
READ_BLOCK = 64 * KB


# --- progress --------------------------------------------------------------------------------------------

# progress(operation, nbytes): a stub command of `operation` completed - an erase (stream.EraseSector, nbytes the
# sector's size), a buffer of a stream.Program (its bytes) or a stream.Crc (its size). f4load.stream calls it.
Progress = stream.Progress


# --- results of the work ---------------------------------------------------------------------------------

@dataclass
class Outcome:
    """What one command did to the flash, for the report. Times are seconds; virtual ones only on the
    virtual chip."""
    erased: List[Sector] = field(default_factory=list)
    skipped: List[Sector] = field(default_factory=list)   # touched sectors left alone (unchanged or blank)
    bytes_programmed: int = 0
    program_writes: int = 0
    bytes_kept: int = 0
    verified: Optional[bool] = None  # None: not verified
    plan: Optional[Plan] = field(default=None, repr=False)
    streams: List[stream.StreamReport] = field(default_factory=list, repr=False)
    wall_seconds: float = 0.0
    virtual_seconds: Optional[float] = None
    backup: Optional[Path] = None  # the backup of the kept bytes, when it was left on disk

    @property
    def bytes_erased(self) -> int:
        return sum(s.size for s in self.erased)

    @property
    def bytes_skipped(self) -> int:
        return sum(s.size for s in self.skipped)

    def __str__(self) -> str:
        """One line: "erased 48 KB (sectors 0-2), programmed 40,000 bytes, kept 1,024 bytes, verified"."""
        parts = []
        if self.erased:
            parts.append(f"erased {self.bytes_erased // KB} KB "
                         f"(sectors {sector_ranges([s.index for s in self.erased])})")
        if self.bytes_programmed:
            parts.append(f"programmed {self.bytes_programmed:,} bytes")
        if self.skipped:
            parts.append(f"skipped {self.bytes_skipped // KB} KB (sectors "
                         f"{sector_ranges([s.index for s in self.skipped])})")
        if self.bytes_kept:
            parts.append(f"kept {self.bytes_kept:,} bytes")
        if self.verified is not None:
            parts.append("verified" if self.verified else "NOT verified")
        return ", ".join(parts) or "nothing to do"


# --- the session -----------------------------------------------------------------------------------------

class Session:
    """One connected, identified target (see the module docstring). Use as a context manager:

        with Session(probe="sim") as session:
            outcome = session.program(image)
    """

    def __init__(self, probe: Optional[str] = None, connect: str = "under-reset", reset_run: Optional[bool] = None,
                 vdd: Optional[float] = None, sim_link: Optional[str] = None,
                 frequency: Optional[int] = None, backup_dir: Optional[Path] = None,
                 keep_backup: bool = False, psize: Optional[str] = None, strict_identity: bool = True) -> None:
        if connect not in CONNECT_MODES:
            raise UsageError(f"connect mode {connect!r}: choose one of {', '.join(CONNECT_MODES)}")
        if psize is not None and psize not in PSIZE_BY_NAME:
            raise UsageError(f"parallelism {psize!r}: choose one of {', '.join(PSIZE_BY_NAME)}")
        # The program/erase parallelism asked for (x8/x16/x32) instead of the widest the supply allows: a board
        # whose supply cannot deliver the x32 erase current may get through at x8 (DS8626: less current).
        self.asked_psize = psize
        # False (`f4load diagnose`): identity problems (another DEV_ID, an F_SIZE this family does not have) are
        # kept in TargetInfo.identity_problems instead of refusing the connection, so every other check runs.
        self.strict_identity = strict_identity
        self.probe_name = probe if probe else probes.default_spec()
        self.probe_uid: Optional[str] = None  # the opened probe's unique ID
        self.connect_mode = connect
        self.reset_run = reset_run
        self.given_vdd = vdd
        self.sim_link = sim_link
        self.frequency = frequency if frequency else DEFAULT_SWD_HZ
        self.backup_dir = backup_dir if backup_dir is not None else backup_directory()
        self.keep_backup = keep_backup
        self._peripherals_checked = False
        self._backup: Optional[Path] = None  # the backup file of the program() under way, once written
        self.pyocd: Any = None
        self.target: Any = None
        self.info: Optional[TargetInfo] = None
        self.stub_image = StubImage.shipped()
        self._runner: Optional[stream.StubRunner] = None  # live while a `stub()` block runs
        # Whether f4load halted the core (a reset-and-run at the end then brings the application back).
        self.halted_by_us = connect != "attach"
        self._commands_at_open: Optional[int] = None
        self._virtual_at_open: Optional[float] = None
        # Ctrl-C/SIGTERM are only recorded from open() to close() and raised at the safe points (f4load.interrupt)
        self._signals = interrupt.deferred()
        self._crc_unit: Optional[CrcUnitCheck] = None  # the CRC unit's known-answer check, once per session

    @property
    def is_sim(self) -> bool:
        return probes.is_sim(self.probe_name)

    @property
    def probe_label(self) -> str:
        """How reports name the probe: "virtual STM32F407 (sim)", or the real probe's product and uid."""
        return probes.label(self.probe_name, self.pyocd.probe if self.pyocd is not None else None)

    # --- connect and identify --------------------------------------------------------------------------
    def __enter__(self) -> Session:
        self.open()
        return self

    def __exit__(self, exc_type: Any, *exc_info: object) -> None:
        self.close()
        if exc_type is None:
            interrupt.check("after the work had completed")

    def open(self) -> TargetInfo:
        self._signals.__enter__()
        try:
            return self._open()
        except BaseException:
            self._signals.__exit__(None, None, None)
            raise

    def _open(self) -> TargetInfo:
        from pyocd.core.session import Session as PyocdSession

        options: Dict[str, Any] = {
            "connect_mode": self.connect_mode,
            "target_override": "cortex_m",
            # f4load decides what happens to the core at the end (close()); pyocd must not resume it, which
            # after a flash operation would run the stub's BKPT with debugging disabled.
            "resume_on_disconnect": False,
            "frequency": self.frequency,
        }
        if self.is_sim and self.sim_link:
            options[SIM_LINK_OPTION] = self.sim_link
        probe = probes.find(self.probe_name)
        self.probe_uid = str(probe.unique_id)
        session = PyocdSession(probe, auto_open=False, options=options)
        try:
            session.open()
        except (pyocd_errors.Error, OSError) as error:
            try:
                session.close()
            except Exception:  # noqa: BLE001 - the open failure is the one to report
                pass
            hint = (" (is NRST wired to the probe? try --connect halt or --connect attach)"
                    if self.connect_mode == "under-reset" and not self.is_sim else "")
            raise ConnectError(f"cannot connect through probe {self.probe_name}: {_one_line(error)}{hint}") from None
        self.pyocd = session
        self.target = session.target
        self._commands_at_open = self.probe_commands
        self._virtual_at_open = self.virtual_now()
        try:
            self.info = self._identify()
            interrupt.check("while connecting: nothing was changed on the target")
        except BaseException:
            self.close()
            raise
        return self.info

    def _identify(self) -> TargetInfo:
        try:
            raw = read_identity(self.target, strict=self.strict_identity)
        except pyocd_errors.TransferError as error:
            raise ConnectError(f"cannot read the target's identity: {_one_line(error)}") from None
        warnings = clone_warnings(raw.rom_designer, raw.part.rev_id, raw.cpuid)
        vdd, source = self._supply_voltage()
        if source == "assumed":
            warnings.append(f"the probe does not measure VDD: assuming {ASSUMED_VDD} V (x32); pass --vdd if the "
                            "supply is lower")
        try:
            psize = protocol.psize_for_voltage(vdd)
        except ValueError as error:
            raise ConnectError(f"{error} ({'measured by the probe' if source == 'probe' else 'given'}); "
                               "check the supply, or pass --vdd if the probe misreads it") from None
        if self.asked_psize is not None:
            asked = PSIZE_BY_NAME[self.asked_psize]
            if asked > psize:
                raise UsageError(
                    f"--psize {self.asked_psize} needs VDD of {PSIZE_MIN_VDD[asked]:.1f} V or more (RM0090 Table 13); "
                    f"VDD is {vdd:.2f} V ({'measured by the probe' if source == 'probe' else source}): the widest it "
                    f"allows is {PSIZE_NAMES[psize]}; nothing was erased")
            psize = asked
        return TargetInfo(part=raw.part, idcode=raw.idcode, unique_id=raw.unique_id.hex(), options=raw.options,
                          vdd=vdd, vdd_source=source, psize=psize, psize_asked=self.asked_psize is not None,
                          rom_designer=raw.rom_designer, probe=self._probe_description(), warnings=tuple(warnings),
                          cpuid=raw.cpuid, identity_problems=raw.problems)

    def _supply_voltage(self) -> Tuple[float, str]:
        if self.given_vdd is not None:
            return float(self.given_vdd), "given"
        measured = probe_supply_voltage(self.pyocd.probe)
        if measured is None:
            return ASSUMED_VDD, "assumed"
        return measured, "probe"

    def _probe_description(self) -> str:
        return self.probe_label

    # --- counters --------------------------------------------------------------------------------------
    @property
    def probe_commands(self) -> Optional[int]:
        """Probe commands so far (the virtual probe counts them; pyocd's real probes do not)."""
        count = getattr(self.pyocd.probe, "commands", None) if self.pyocd is not None else None
        return count if isinstance(count, int) else None

    @property
    def commands_since_open(self) -> Optional[int]:
        now = self.probe_commands
        return None if now is None or self._commands_at_open is None else now - self._commands_at_open

    @property
    def virtual_since_open(self) -> Optional[float]:
        """Virtual seconds since the probe connected (virtual chip only)."""
        now = self.virtual_now()
        return None if now is None or self._virtual_at_open is None else now - self._virtual_at_open

    def virtual_now(self) -> Optional[float]:
        """Virtual seconds on the virtual chip's clock (in process, or a board of `f4load-sim serve` through
        the stlink-tcp probe), None on real hardware."""
        if self.pyocd is None:
            return None
        clock = getattr(self.pyocd.probe, "clock", None)
        return float(clock.seconds) if clock is not None else None

    # --- memory ----------------------------------------------------------------------------------------
    def read(self, address: int, length: int) -> bytes:
        """`length` bytes from `address`, through word reads where possible (a probe moves 32-bit blocks far
        faster than bytes)."""
        out = bytearray()
        start, end = address & ~3, (address + length + 3) & ~3
        try:
            at = start
            while at < end:
                interrupt.check(f"while reading memory at {at:#010x}")
                count = min(READ_BLOCK, end - at)
                words = self.target.read_memory_block32(at, count // 4)
                out += struct.pack(f"<{len(words)}I", *words)
                at += count
        except pyocd_errors.TransferFaultError as error:
            raise UsageError(f"cannot read {length} bytes at {address:#010x}: {_one_line(error)}") from None
        except pyocd_errors.TransferError as error:
            raise LinkError(f"the probe failed while reading {address:#010x}: {_one_line(error)}") from None
        return bytes(out[address - start:address - start + length])

    # --- running the stub ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def stub(self, psize: Optional[int] = None) -> Iterator[stream.StubRunner]:
        """The stub loaded and initialised once for the `with` block (a `stream.StubRunner`): call
        `runner.run(operations, progress=...)` once per batch. Halts a running core first (IWDG frozen). On
        leaving, UnInit locks FLASH_CR (checked on a clean exit). Stream errors become SessionErrors of the
        right class; a failure the stub reports stays a StubError (a StreamCommandError) with all its fields.
        Between batches the core is halted at the stub's halt word: the host may read memory and plan, but
        must not run other code in SRAM (see `set_option_bytes`)."""
        assert self.info is not None
        if self._runner is not None:
            raise SessionError("internal: the stub is already loaded (nested Session.stub())")
        interrupt.check("before the flash stub was loaded: nothing was erased or programmed")
        self._halt_for_work()
        with self._stream_errors():
            with stream.StubRunner(self.target, self.stub_image,
                                   psize=self.info.psize if psize is None else psize) as runner:
                self._runner = runner
                try:
                    yield runner
                finally:
                    self._runner = None

    def run(self, operations: Sequence[stream.Operation], progress: Optional[Progress] = None,
            psize: Optional[int] = None) -> stream.StreamReport:
        """Run `operations` in one stub session of their own (load, Init, one stream, UnInit), at the session's
        parallelism unless `psize` is given."""
        with self.stub(psize) as runner:
            return runner.run(operations, progress=progress)

    @contextlib.contextmanager
    def _stream_errors(self) -> Iterator[None]:
        """Stream failures (f4load.stream) as the session's errors; everything else passes unchanged."""
        try:
            yield
        except stream.TargetResetError as error:
            raise LinkError(reset_report(error, self._narrower_psize())) from error
        except stream.LinkLostError as error:
            raise LinkError(link_lost_report(error)) from error
        except stream.StreamCommandError as error:
            narrower = self._narrower_psize()
            if "OPERR" in error.sr_names and narrower:
                # RM0090 3.7.4 ties OPERR to no other flag: on a board whose supply sags under the erase
                # current it is the operation failing at this parallelism.
                error.args = (f"{error.args[0]}\n  hint: OPERR at {self.info.psize_name if self.info else '?'}: a "
                              f"supply that sags under the program/erase current fails this way; a lower "
                              f"parallelism draws less and may get through: add {narrower}",) + error.args[1:]
            raise
        except stream.StreamError as error:
            raise SessionError(f"the flash stub stopped answering: {error}") from error
        except pyocd_errors.Error as error:
            # pyocd refused a step it expected to work (e.g. "core is not halted"): the target changed state
            # under the host in the middle of the work.
            raise LinkError(f"the target stopped responding as expected during the work: {_one_line(error)} "
                            "(did it reset?)") from error

    def _narrower_psize(self) -> str:
        """"--psize x8" when the work ran wider than x8 (the hint after a supply failure), else ""."""
        if self.info is None or self.info.psize == protocol.PSIZE_X8:
            return ""
        return "--psize x8"

    def _halt_for_work(self) -> None:
        """Halt a running core (--connect attach) for the stub. The IWDG is frozen first: an application
        may have started it, and between the halt and the stub's first refresh it would otherwise keep
        counting and reset the chip (DBG_IWDG_STOP stops it while the core is halted, RM0090 38.16.4).
        When the application ran (halt/attach), first refuse if it left a WWDG or a DMA stream running (the
        module docstring); a running core is then left alone."""
        self.check_no_running_peripherals()
        self.halted_by_us = True
        try:
            if self.target.is_halted():
                return
            self.target.write32(DBGMCU_APB1_FZ, self.target.read32(DBGMCU_APB1_FZ) | DBGMCU_APB1_FZ_DBG_IWDG_STOP)
            self.target.halt()
            if not self.target.is_halted():
                raise LinkError("the core did not halt: the target reset or stopped answering")
        except pyocd_errors.TransferError as error:
            raise LinkError(f"lost the target while halting it: {_one_line(error)}") from None

    def check_no_running_peripherals(self) -> None:
        """Refuse (UsageError, nothing loaded or erased) when the application left a peripheral running that
        would reset the chip or overwrite the stub during the work. Connected under reset nothing can run:
        no check. Read once per session (the stub starts neither)."""
        if self.connect_mode == "under-reset" or self._peripherals_checked:
            return
        try:
            state = read_running_peripherals(self.target.read32)
        except pyocd_errors.TransferError as error:
            raise LinkError(f"lost the target while reading WWDG/DMA state: {_one_line(error)}") from None
        hazards = peripheral_hazards(state)
        if hazards:
            raise UsageError(
                f"the application left running what the flash stub cannot work with: {'; '.join(hazards)}. "
                f"Nothing was loaded or erased. Connect under reset (leave out --connect {self.connect_mode}): "
                "the application then never starts")
        self._peripherals_checked = True

    def crc_unit(self) -> CrcUnitCheck:
        """The known-answer check of the chip's CRC unit (f4load.crc.check_crc_unit), made once per session with
        the core halted, before f4load relies on the unit. When it fails f4load says so once (a warning) and
        compares read-back data instead: slower (the bytes cross the link), still correct. The stub's batches
        answer the same check themselves when they start (`_crc_checked`), so work on the stub costs nothing
        extra for it; this one is for `diagnose`."""
        if self._crc_unit is None:
            self._halt_for_work()
            try:
                result = check_crc_unit(self.target)
            except pyocd_errors.TransferError as error:
                raise LinkError(f"lost the target while checking its CRC unit: {_one_line(error)}") from None
            self._crc_checked(result)
        assert self._crc_unit is not None
        return self._crc_unit

    def _crc_checked(self, check: CrcUnitCheck) -> bool:
        """Record the CRC unit's known-answer check (the first one of the session is kept; a failure is said
        once) and say whether it passed."""
        if self._crc_unit is None:
            if not check.ok:
                LOG.warning("%s: the chip's CRC unit is absent, broken or not ST's (a clone, or damage); f4load "
                            "checks the flash by reading it back instead (slower)", check.describe())
            self._crc_unit = check
        return check.ok

    def _batch_crc_ok(self, runner: stream.StubRunner) -> bool:
        """The known-answer check the last batch of `runner` made when it started (one read)."""
        return self._crc_checked(CrcUnitCheck(runner.stream.read_crc_check(), KNOWN_ANSWER))

    def _read_back_crcs(self, ranges: Sequence[Tuple[int, int]]) -> Dict[Tuple[int, int], int]:
        """{(address, size): CRC} of the flash read back over the link and checksummed on the host (the
        fallback when the CRC unit cannot be trusted)."""
        return {(a, size): stm32_crc32(self.read(a, size)) for a, size in ranges}

    def sector_crcs(self, sectors: Sequence[Sector], runner: Optional[stream.StubRunner] = None) -> Dict[int, int]:
        """{sector index: CRC of the whole sector} by the target's CRC unit: one batch on `runner`, or in a
        stub session of its own; read back and checksummed on the host when the unit failed its check."""
        if not sectors:
            return {}
        ranges = [(s.start, s.size) for s in sectors]
        if self._crc_unit is not None and not self._crc_unit.ok:
            values = self._read_back_crcs(ranges)
        else:
            values = self._target_crcs(ranges, runner)
        return {s.index: values[(s.start, s.size)] for s in sectors}

    def _target_crcs(self, ranges: Sequence[Tuple[int, int]], runner: Optional[stream.StubRunner] = None
                     ) -> Dict[Tuple[int, int], int]:
        """{(address, size): CRC} by the stub (one batch on `runner`, or a stub session of its own), read back
        instead when the unit fails the known-answer check that batch made."""
        operations: List[stream.Operation] = [stream.Crc(a, size) for a, size in ranges]
        if runner is not None:
            report = runner.run(operations)
            ok = self._batch_crc_ok(runner)
        else:
            with self.stub() as own:
                report = own.run(operations)
                ok = self._batch_crc_ok(own)
        return stream.crc_map(report) if ok else self._read_back_crcs(ranges)

    # --- the run journal ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def journaled(self, command: str) -> Iterator[None]:
        """Record the run of `command` in this chip's journal (f4load.journal), whatever its outcome."""
        try:
            yield
        except BaseException as error:
            self._record(command, error)
            raise
        self._record(command, None)

    def run_journal(self) -> Optional[journal.Journal]:
        """This chip's run journal (None before the chip is identified)."""
        return journal.Journal(self.info.unique_id) if self.info is not None else None

    def _record(self, command: str, error: Optional[BaseException]) -> None:
        log = self.run_journal()
        if log is None:
            return
        assert self.info is not None
        try:
            entry = journal.entry_for(command, error, self.info.psize_name, self.info.vdd)
        except Exception as problem:  # noqa: BLE001 - the journal must never hide the run's own outcome
            LOG.warning("could not make the run journal entry: %s", problem)
            return
        log.record(entry)

    # --- checks made before anything is erased ---------------------------------------------------------
    def check_not_read_protected(self) -> None:
        assert self.info is not None
        options = self.info.options
        if options.rdp_level:
            raise ProtectionError(
                f"read-out protection level {options.rdp_level} is active (RDP byte {options.rdp:#04x}): with a "
                "debugger attached the flash can be neither read nor erased nor programmed (RM0090 3.7.3); "
                + ("level 2 is permanent, nothing can undo it" if options.rdp_level == 2 else
                   "nothing was erased. Run `f4load rdp 0` to go back to level 0: that mass-erases the whole "
                   "flash"))

    def check_not_write_protected(self, sectors: Iterable[Sector]) -> None:
        assert self.info is not None
        protected = set(self.info.options.write_protected(self.info.part))
        hit = sorted(s.index for s in sectors if s.index in protected)
        if hit:
            raise ProtectionError(
                f"sector{'s' if len(hit) > 1 else ''} {sector_ranges(hit).replace(',', ', ')} "
                f"{'are' if len(hit) > 1 else 'is'} write-protected (option bytes nWRP = "
                f"{self.info.options.nwrp:#05x}, a 0 bit protects its sector, RM0090 3.7.1) and would have to "
                f"change; nothing was erased. Run `f4load unprotect {sector_ranges(hit)}` to clear the protection")

    # --- option bytes ------------------------------------------------------------------------------------
    def set_option_bytes(self, new: OptionBytes, allow_rdp2: bool = False) -> OptionBytes:
        """Program the user option bytes (f4load.option_bytes) and return what OPTCR reads afterwards; the
        session's TargetInfo is updated to match."""
        assert self.info is not None
        if self._runner is not None:
            # OptionProgrammer's BSY wait loop runs at option_bytes.WAIT_LOOP_ADDRESS, inside the stub's buffers.
            raise SessionError("internal: option bytes cannot be programmed while the flash stub is loaded")
        interrupt.check("before the option bytes were changed: nothing was changed")
        self._halt_for_work()
        clock = self.virtual_now
        now = (lambda: clock() or 0.0) if clock() is not None else time.monotonic
        try:
            after = option_bytes.OptionProgrammer(self.target, now).program(new, allow_rdp2=allow_rdp2)
        except pyocd_errors.TransferError as error:
            raise LinkError(f"lost the target while programming the option bytes: {_one_line(error)}") from None
        self.info = dataclasses.replace(self.info, options=after)
        return after

    def reset(self, halt: bool = False) -> Dict[str, Any]:
        """Reset the target the way pyocd is configured to (`reset_type`: by default the Cortex-M's
        SYSRESETREQ, or the probe's NRST), then let the application run or, with `halt`, hold the core at its
        reset vector (the vector catch, DEMCR.VC_CORERESET). Returns what the report shows: `halted` and `pc`."""
        try:
            if halt:
                self.target.reset_and_halt()
                self.reset_run = False
                return {"halted": True, "pc": int(self.target.read_core_register("pc"))}
            self.target.reset()
            return {"halted": False}
        except pyocd_errors.TransferError as error:
            raise LinkError(f"lost the target while resetting it: {_one_line(error)}") from None

    def reset_flags(self) -> int:
        """RCC_CSR's reset flags (RM0090 7.3.21), as they are now."""
        return int(self.target.read32(RCC_CSR)) & RESET_FLAGS

    # --- the commands --------------------------------------------------------------------------------------
    def program(self, image: Image, keep: bool = True, verify: bool = True,
                progress: Optional[Progress] = None, before_work: Optional[Callable[[Plan], None]] = None
                ) -> Outcome:
        """Write `image`: sector CRCs -> plan -> erases, copies, program chunks (with a CRC of every changed
        sector when `verify`), all in one batch of the stub, decided while it runs (f4load.job).
        `before_work(plan)` is called once the plan is known, before the first erase (a sector whose kept bytes
        are still to be read out is in it as "erase+program", its chunks provisional). The bytes kept around
        the image in a sector are in the backup file before that sector's erase (module docstring); an error
        raised after the file was written carries its path (`backup_of`)."""
        try:
            with self.journaled("program"):
                return self._program(image, keep, verify, progress, before_work)
        except BaseException as error:
            if self._backup is not None:
                setattr(error, BACKUP_ATTRIBUTE, self._backup)
            raise
        finally:
            self._backup = None

    def _program(self, image: Image, keep: bool, verify: bool, progress: Optional[Progress],
                 before_work: Optional[Callable[[Plan], None]]) -> Outcome:
        assert self.info is not None
        part = self.info.part
        image.check_fits(part)
        self.check_not_read_protected()
        outcome, started = Outcome(), self._start_clock()
        with self.stub() as runner:
            job = ProgramJob(runner, image, part, keep=keep, verify=verify, psize=self.info.psize,
                             read_flash=self.read, backup=self._back_up_kept, crc_check=self._crc_checked,
                             progress=progress, before_work=before_work,
                             check_protection=self.check_not_write_protected)
            result = job.run()
        work = result.plan
        outcome.plan = work
        outcome.streams.append(result.report)
        outcome.program_writes = result.program_writes
        changing = [s for s in work.sectors if s.action is not Action.SKIP]
        outcome.erased = work.erased_sectors
        outcome.skipped = [s.sector for s in work.sectors if s.action is Action.SKIP]
        outcome.bytes_programmed = work.bytes_programmed
        outcome.bytes_kept = work.bytes_kept
        self._finish_clock(outcome, started)
        if verify:
            ranges = [(s.sector.start, s.sector.size) for s in changing]
            values = result.verify if job.crc_ok else self._read_back_crcs(ranges)
            bad = [(s.sector.start, s.sector.size, s.crc, values[(s.sector.start, s.sector.size)])
                   for s in changing if values[(s.sector.start, s.sector.size)] != s.crc]
            if bad:
                raise VerifyError(_mismatch_text(bad, part), bad)
            outcome.verified = True
        if self._backup is not None:
            if verify and not self.keep_backup:
                self._backup.unlink()
            else:
                outcome.backup = self._backup
        return outcome

    def _back_up_kept(self, kept: Sequence[Tuple[int, bytes]]) -> None:
        """The program job's backup (f4load.job): every kept range so far, before the erase of the sector that
        holds the last ones; the file is written on the first call and rewritten, whole and synced, on the
        next ones."""
        if self._backup is None:
            self._backup = self._write_backup(kept)
            return
        try:
            rewrite_backup(self._backup, kept)
        except OSError as error:
            raise UsageError(f"cannot update the backup {self._backup} of the bytes kept around the image: "
                             f"{error.strerror or error}; the sector they belong to was not erased") from None

    def _write_backup(self, kept: Sequence[Tuple[int, bytes]]) -> Path:
        """Write the kept bytes to a new backup file before anything is erased; a file that cannot be
        written stops the work (nothing erased yet)."""
        assert self.info is not None
        try:
            path = write_backup(self.backup_dir, self.info.unique_id, kept)
        except OSError as error:
            raise UsageError(f"cannot write the backup of the {sum(len(d) for _, d in kept):,} bytes kept around "
                             f"the image to {self.backup_dir}: {error.strerror or error}; the sector they belong "
                             f"to was not erased (set ${BACKUP_DIR_ENV} to a writable directory, or pass "
                             "--no-keep)") from None
        LOG.info("kept bytes backed up to %s", path)
        return path

    def erase(self, sectors: Sequence[int], force: bool = False, progress: Optional[Progress] = None,
              before_work: Optional[Callable[[List[Sector]], None]] = None) -> Outcome:
        """Erase the sectors with these indexes. Sectors already blank (by the target's CRC) are skipped
        unless `force`: an erase costs 0.25-2 s and wears the flash, a CRC about a millisecond. When every sector
        of the part is to be erased and one mass erase is faster (a 1 MB part: 8 s against 8.55 s at x32,
        `f4load.floor.mass_erase_is_faster`), one mass erase does it (after the same write-protection check:
        a protected sector would make it fail with WRPERR). The CRCs and the erases run with the stub loaded
        once. `before_work(sectors)` is called with the sectors about to be erased, before the first erase."""
        with self.journaled("erase"):
            return self._erase(sectors, force, progress, before_work)

    def _erase(self, sectors: Sequence[int], force: bool, progress: Optional[Progress],
               before_work: Optional[Callable[[List[Sector]], None]]) -> Outcome:
        assert self.info is not None
        chosen = self._sectors(sectors)
        self.check_not_read_protected()
        outcome, started = Outcome(), self._start_clock()
        with self.stub() as runner:
            # One batch: the CRCs, then (decided while the stub waits) the erases.
            to_erase = chosen
            if not force:
                runner.open([stream.Crc(s.start, s.size) for s in chosen], progress)
                runner.pump(lambda: runner.stream.done >= len(chosen))
                if self._batch_crc_ok(runner):
                    crcs = {s.index: runner.stream.crc_value(seq) for seq, s in enumerate(chosen, 1)}
                else:
                    crcs = {s.index: stm32_crc32(self.read(s.start, s.size)) for s in chosen}
                to_erase = [s for s in chosen if crcs[s.index] != blank_crc(s.size)]
                outcome.skipped = [s for s in chosen if s not in to_erase]
            self.check_not_write_protected(to_erase)
            if before_work is not None:
                before_work(to_erase)
            erases: List[stream.Operation] = [stream.EraseSector(s.index) for s in to_erase]
            if to_erase and mass_erase_is_faster(to_erase, self.info.psize):
                erases = [stream.EraseChip(self.info.part.flash_size)]
            if force:
                runner.open(erases, progress)
            else:
                runner.append(erases)
            outcome.streams.append(runner.finish())
        outcome.erased = to_erase
        self._finish_clock(outcome, started)
        return outcome

    def verify(self, image: Image) -> Outcome:
        """Compare the flash with `image` by CRC (one per sector the image touches, over the image's
        word-aligned ranges; bytes of an edge word outside the image are taken from the target)."""
        with self.journaled("verify"):
            return self._verify(image)

    def _verify(self, image: Image) -> Outcome:
        assert self.info is not None
        part = self.info.part
        image.check_fits(part)
        self.check_not_read_protected()
        outcome, started = Outcome(), self._start_clock()
        ranges: List[Tuple[int, int, int]] = []  # (address, size, expected CRC)
        for sector in part.sectors_touching(image.start, image.end):
            for a, b in image.ranges(sector.start, sector.end):
                start, end = a & ~3, (b + 3) & ~3
                expected = bytearray(image.data_at(start, end - start))
                if start < a:
                    expected[:a - start] = self.read(start, a - start)
                if b < end:
                    expected[b - start:] = self.read(b, end - b)
                ranges.append((start, end - start, stm32_crc32(bytes(expected))))
        if self._crc_unit is None or self._crc_unit.ok:
            values = self._target_crcs([(a, size) for a, size, _ in ranges])
        else:
            values = self._read_back_crcs([(a, size) for a, size, _ in ranges])
        bad = [(a, size, crc, values[(a, size)]) for a, size, crc in ranges if values[(a, size)] != crc]
        self._finish_clock(outcome, started)
        if bad:
            raise VerifyError(_mismatch_text(bad, part, self._first_difference(image, bad), image.source), bad)
        outcome.verified = True
        return outcome

    def _first_difference(self, image: Image, bad: Sequence[Tuple[int, int, int, int]]) -> Optional[int]:
        """The first address where the flash differs from the image, read back (only after a CRC mismatch)."""
        address, size = bad[0][0], bad[0][1]
        actual = self.read(address, size)
        for a, b in image.ranges(address, address + size):
            expected = image.data_at(a, b - a)
            for i, (x, y) in enumerate(zip(expected, actual[a - address:b - address])):
                if x != y:
                    return a + i
        return None

    def _sectors(self, indexes: Sequence[int]) -> List[Sector]:
        assert self.info is not None
        part = self.info.part
        missing = sorted(set(i for i in indexes if not 0 <= i < len(part.sectors)))
        if missing:
            raise UsageError(f"the {part.name} has sectors 0-{len(part.sectors) - 1} only "
                             f"({part.flash_size // KB} KB of flash); no sector {_sector_list(missing)}")
        return [part.sectors[i] for i in sorted(set(indexes))]

    def _start_clock(self) -> Tuple[float, Optional[float]]:
        return time.monotonic(), self.virtual_now()

    def _finish_clock(self, outcome: Outcome, started: Tuple[float, Optional[float]]) -> None:
        outcome.wall_seconds = time.monotonic() - started[0]
        now = self.virtual_now()
        if now is not None and started[1] is not None:
            outcome.virtual_seconds = now - started[1]

    # --- leaving ---------------------------------------------------------------------------------------
    def close(self) -> None:
        """Leave the target in a known state, then close the probe. Best effort: a target that is gone
        cannot be put anywhere, and the failure that got us here is the one to report."""
        session, self.pyocd = self.pyocd, None
        try:
            if session is None:
                return
            try:
                self._leave_target(session)
            except Exception as error:  # noqa: BLE001 - see the docstring
                LOG.warning("could not leave the target in a known state: %s", _one_line(error))
            try:
                session.close()
            except F4LoadError:
                raise  # the work failed after all, e.g. the virtual chip's state not saved (SimSaveError)
            except Exception as error:  # noqa: BLE001
                LOG.warning("closing the probe failed: %s", _one_line(error))
        finally:
            self._signals.__exit__(None, None, None)

    def _leave_target(self, session: Any) -> None:
        target = self.target
        reset_run = self.reset_run if self.reset_run is not None else self.halted_by_us
        if interrupt.requested():
            reset_run = False  # the user stopped f4load: halt and lock, start nothing
        if self.halted_by_us or reset_run:
            # The stub stopped: the core halted (after a failure it may still be in the stub).
            if not target.is_halted():
                target.halt()
            # FLASH_CR locked. Never write CR while BSY is set: the write would stall the bus (RM0090 3.6).
            if not target.read32(FLASH_SR) & FLASH_SR_BSY and not target.read32(FLASH_CR) & FLASH_CR_LOCK:
                target.write32(FLASH_CR, FLASH_CR_LOCK)
        if reset_run:
            # Reset with the core halted at the vector, then let pyocd resume it and switch debug off on
            # disconnect: the application starts as after power-on.
            target.reset_and_halt()
            session.options.set("resume_on_disconnect", True)


def _mismatch_text(bad: Sequence[Tuple[int, int, int, int]], part: Part, first: Optional[int] = None,
                   reference: str = "what was written") -> str:
    lines = [f"verify failed: {len(bad)} range{'s' if len(bad) > 1 else ''} differ{'s' if len(bad) == 1 else ''} "
             f"from {reference}"]
    for address, size, expected, actual in bad[:8]:
        sector = part.sector_at(address)
        where = f" (sector {sector.index})" if sector is not None else ""
        lines.append(f"  {address:#010x}+{size:#x}{where}: CRC {actual:#010x}, expected {expected:#010x}")
    if first is not None:
        lines.append(f"  first differing byte at {first:#010x}")
    return "\n".join(lines)


def reset_report(error: stream.TargetResetError, narrower: str = "") -> str:
    """The message of a reset (or a lockup) in the middle of the work: what was running (by the stub's own
    record where it survived), why the chip reset (RCC_CSR once, in RM0090's terms), what the flash holds now,
    and what to do next."""
    doing = (f"during {stream.describe_operation(error.in_progress)}" if error.in_progress is not None
             else "in the middle of the work")
    by = f" (by {error.located_by})" if error.located_by else ""
    if not error.reset_seen:  # a lockup, or the core halted outside the stub: no reset
        lines = [f"the stub stopped running {doing}{by}: {error.base_message}"]
        step = "run `f4load diagnose`, then the same command again"
    else:
        cause = reset_causes.classify(error.reset_flags, during_work=True)
        lines = [f"the chip reset {doing}{by}: {cause.name}",
                 f"  reset cause: {cause.describe()}"]
        step = cause.next_step
        if cause.supply:
            lower = (f"a lower parallelism draws less current and may get through: run the same command with "
                     f"{narrower} (slower)" if narrower else "this already ran at x8, the lowest parallelism")
            step = (f"the supply cannot deliver the erase/program current: check it and the VCAP1/VCAP2 "
                    f"capacitors (2.2 uF each, DS8626); {lower}")
    if error.flash_after:
        lines.append(f"  the flash now: {error.flash_after}")
    lines.append(f"  next: {step}")
    return "\n".join(lines)


def link_lost_report(error: stream.LinkLostError) -> str:
    """The message of a lost link in the middle of the work (see `reset_report`)."""
    doing = f" during {stream.describe_operation(error.in_progress)}" if error.in_progress is not None else ""
    by = f" (by {error.located_by})" if error.located_by and error.in_progress is not None else ""
    lines = [f"lost the target{doing}{by}: {error.base_message}"]
    if error.flash_after:
        lines.append(f"  the flash now: {error.flash_after}")
    lines.append("  next: check the cable, the probe and the board's supply, reset or power-cycle the board, then "
                 "run the same command again")
    return "\n".join(lines)


def reset_flag_names(flags: int) -> List[str]:
    """RCC_CSR reset flags in words, most telling first ("independent watchdog", "brown-out", ...)."""
    return [name for bit, name in RESET_FLAG_NAMES.items() if flags & bit]


def reset_cause_text(flags: int) -> str:
    """" (RCC_CSR: brown-out, power-on/power-down reset)" or "" when no flag is set."""
    names = reset_flag_names(flags)
    return f" (RCC_CSR: {', '.join(names)} reset)" if names else ""


def _sector_list(indexes: Sequence[int]) -> str:
    return ", ".join(str(i) for i in indexes)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def parse_sectors(text: str) -> List[int]:
    """"0-3,5" -> [0, 1, 2, 3, 5]. ValueError with a reason for anything else."""
    out: List[int] = []
    for item in text.replace(" ", "").split(","):
        if not item:
            raise ValueError(f"empty item in sector list {text!r}")
        low, dash, high = item.partition("-")
        try:
            first, last = int(low, 0), int(high, 0) if dash else int(low, 0)
        except ValueError:
            raise ValueError(f"{item!r} is not a sector number or a range like 0-3") from None
        if first > last:
            raise ValueError(f"sector range {item!r} runs backwards")
        out.extend(range(first, last + 1))
    return sorted(set(out))

