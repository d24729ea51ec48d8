"""The STM32F405/407/415/417 embedded flash interface (RM0090 chapter 3), as the virtual chip sees it.

`FlashInterface` models the FLASH_ACR/KEYR/OPTKEYR/SR/CR/OPTCR registers, the program and erase state
machine with its error flags, the option bytes (read-out protection, write protection, user bits) and the
DS8626 timing. Facts come from `../shared/reference/f4-flash.md`; register names from `f4load.registers`.

Protocol with the chip (docs/sim.md):
- The chip calls `read_register`/`write_register` for 0x4002_3C00.., `write_flash` for every store into main
  flash or OTP, and `on_time()` after it has advanced `clock.now_ps`; `next_event_ps()` tells it when the
  next thing happens (end of an operation, or the middle of one that a reset fault cuts).
- While `busy`, the real bus stalls a CR write or a flash store until BSY clears (RM0090 3.6); the chip
  stalls by advancing time to `busy_until_ps()` first. A store or CR write that still reaches the model
  while BSY=1 (only possible with the `bsy_stuck` fault, where the stall never ends) is not performed: a
  flash store sets PGSERR, a CR write is dropped.
- Register accesses and stores first apply whatever has completed by `clock.now_ps` (`on_time()`), so the
  model is right even if the chip did not call `on_time()` after its last advance.
- `request_reset(cause)` is set by the chip; the model calls it when a `reset_during` fault fires (cause as in
  `ResetDuring.cause`): for phase "start" from inside the `write_flash`/`write_register` that starts the Nth
  operation, before anything changes (the operation then does not start); for phase "middle" from `on_time()`
  once the clock reaches half the operation's duration (`next_event_ps()` returns that time), after the
  partial effect below has been applied. The chip is expected to reset, which calls `system_reset()`; until
  then BSY stays set and nothing more happens. Operations are counted from construction, per kind, in
  `operation_counts` ("erase": sector and mass erases, "program": program writes that started).
- `on_operation(kind, phase)`, if set, is told about every operation: kind "erase", "program" or
  "option", phase "start", "end" or "cut" (a reset interrupted it). It is a notification only.

Modelling choices where RM0090 does not say what the silicon does (each is a choice, not a fact):
- Supply voltage versus PSIZE (RM0090 Table 13): an erase or program at a parallelism wider than the supply
  allows (or x64, which needs 8-9 V on VPP that the board does not have) runs for its normal duration, but the
  cells do not change. EOP is set as usual (if EOPIE); OPERR is set at the end if ERRIE=1. A host that does
  not enable ERRIE and does not verify will believe it succeeded.
- Writing FLASH_KEYR while CR is already unlocked is a wrong sequence (bus error, CR locked until reset), as
  the ST HAL assumes when it checks LOCK before writing the keys. The same holds for OPTKEYR and OPTCR.
- Option-byte programming (OPTSTRT) takes 250 ms typical / 500 ms maximum: one 16 KB sector erase at x32,
  since the option bytes are a small flash block that is erased and rewritten. A regression from RDP level 1
  to level 0 adds a mass erase of main flash at x32 (8 s / 16 s); it ignores the supply rule and the write
  protection, and the 0xAA level (with the new nWRP and user bits) takes effect when it ends.
- New option values take effect as soon as OPTSTRT completes (no option reload or power cycle needed).
- With RDP level 2 the option bytes are permanent: OPTSTRT changes nothing and sets WRPERR.
- Option-byte programming is not refused by sticky PGSERR/PGPERR/PGAERR flags, and is not counted by the
  `reset_during` fault.
- An operation cut off by a reset: an erase leaves the leading fraction of its range erased, in proportion
  to the time that has passed, rounded down to 16-byte rows (so a cut at half time erases the first half);
  a program write cut at or after half time has its lower half of bytes programmed, before half time nothing;
  an option-byte programming cut off leaves the option bytes unchanged (a cut regression mass erase leaves
  a partly erased flash and level 1).
- `weak-supply` (a source resistance R): when an erase or program starts, VDD drops to V - R x I, I the
  DS8626 program/erase current of the PSIZE in use (PROGRAM_ERASE_CURRENT_A). Below the power-down threshold
  (1.7 V, PDR_THRESHOLD_V) the chip resets as a brown-out with PORRSTF; below the BOR_LEV threshold (when BOR
  is on) as a BOR; in both cases before anything changes (the current peak comes at once). Below the PSIZE's
  minimum VDD (RM0090 Table 13) the operation runs and does not take, as for `vdd=` (OPERR if ERRIE). The
  probe measures the unloaded V; the core's own run current is not modelled.
- `bsy_stuck`: the operation's effect happens at its normal end, but BSY (and STRT/OPTSTRT) never clears
  until a reset.
- STRT with neither SER nor MER: nothing happens, no flag (the manual calls the result unpredictable).
- Error flags are raised at the moment the program write or STRT is refused; EOP and OPERR at the end.
- x64 maximum timings are not in DS8626 Table 40; the x32 maximums are used. The mass-erase time is
  DS8626's single figure, used for the 512 KB and the 1 MB part alike.
- OTP (0x1FFF_7800..): programmed like main flash; a data block whose lock byte is not 0xFF refuses
  programs with WRPERR; lock bytes themselves are programmable (1 -> 0 only). Writes elsewhere outside main
  flash (system memory, option bytes area) set WRPERR. OTP is never erased.
- EOPIE/ERRIE only gate the flags: no interrupt is delivered to the core.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from f4load.part import FLASH_START, OTP_LOCK_SIZE, OTP_LOCK_START, OTP_SIZE, OTP_START, Part
from f4load.registers import (
    FLASH_CR_EOPIE,
    FLASH_CR_ERRIE,
    FLASH_CR_LOCK,
    FLASH_CR_MER,
    FLASH_CR_PG,
    FLASH_CR_PSIZE_MASK,
    FLASH_CR_PSIZE_SHIFT,
    FLASH_CR_RESET,
    FLASH_CR_SER,
    FLASH_CR_SNB_MASK,
    FLASH_CR_SNB_SHIFT,
    FLASH_CR_STRT,
    FLASH_KEY1,
    FLASH_KEY2,
    FLASH_OPTCR_BOR_LEV_MASK,
    FLASH_OPTCR_BOR_LEV_SHIFT,
    FLASH_OPTCR_NRST_STDBY,
    FLASH_OPTCR_NRST_STOP,
    FLASH_OPTCR_NWRP_MASK,
    FLASH_OPTCR_NWRP_SHIFT,
    FLASH_OPTCR_OPTLOCK,
    FLASH_OPTCR_OPTSTRT,
    FLASH_OPTCR_RDP_MASK,
    FLASH_OPTCR_RDP_SHIFT,
    FLASH_OPTCR_RESET,
    FLASH_OPTCR_WDG_SW,
    FLASH_OPTKEY1,
    FLASH_OPTKEY2,
    FLASH_SR_BSY,
    FLASH_SR_EOP,
    FLASH_SR_OPERR,
    FLASH_SR_PGAERR,
    FLASH_SR_PGPERR,
    FLASH_SR_PGSERR,
    FLASH_SR_W1C,
    FLASH_SR_WRPERR,
    PSIZE_BYTES,
    PSIZE_X8,
    PSIZE_X16,
    PSIZE_X32,
    PSIZE_X64,
    RDP_LEVEL0,
    RDP_LEVEL2,
)
from f4load.sim.clock import PS_PER_MS, PS_PER_US, VirtualClock
from f4load.sim.faults import Faults

# Register offsets from FLASH_BASE (RM0090 3.9, FLASH registers).
ACR_OFFSET = 0x00
KEYR_OFFSET = 0x04
OPTKEYR_OFFSET = 0x08
SR_OFFSET = 0x0C
CR_OFFSET = 0x10
OPTCR_OFFSET = 0x14

# FLASH_ACR: LATENCY 2:0, PRFTEN 8, ICEN 9, DCEN 10, ICRST 11, DCRST 12.
ACR_WRITABLE = 0x0000_1F07
CR_STORED = (FLASH_CR_PG | FLASH_CR_SER | FLASH_CR_MER | FLASH_CR_SNB_MASK | FLASH_CR_PSIZE_MASK
             | FLASH_CR_EOPIE | FLASH_CR_ERRIE | FLASH_CR_LOCK)
SR_READABLE = FLASH_SR_W1C | FLASH_SR_BSY
# The non-volatile OPTCR bits: BOR_LEV, WDG_SW, nRST_STOP, nRST_STDBY, RDP, nWRP.
OPTCR_USER_BITS = (FLASH_OPTCR_BOR_LEV_MASK | FLASH_OPTCR_WDG_SW | FLASH_OPTCR_NRST_STOP | FLASH_OPTCR_NRST_STDBY
                   | FLASH_OPTCR_RDP_MASK | FLASH_OPTCR_NWRP_MASK)
OPTCR_FACTORY = FLASH_OPTCR_RESET & ~FLASH_OPTCR_OPTLOCK  # 0x0FFF_AAEC
# Flags that refuse a new program/erase until software clears them (RM0090 3.6.4, FLASH_SR: "sticky").
SEQUENCE_ERRORS = FLASH_SR_PGSERR | FLASH_SR_PGPERR | FLASH_SR_PGAERR
ROW_BYTES = 16  # a program write must not cross a 128-bit row (PGAERR)
OTP_BLOCK_BYTES = 32

# --- DS8626 Table 40 (typical, maximum) in picoseconds, by PSIZE -----------------------------------------
KB = 1024
S = 1000 * PS_PER_MS
PROGRAM_TIME_PS = (16 * PS_PER_US, 100 * PS_PER_US)  # one program write, any PSIZE
ERASE_TIME_PS: Dict[int, Dict[int, Tuple[int, int]]] = {  # sector size -> PSIZE -> (typ, max)
    16 * KB: {PSIZE_X8: (400 * PS_PER_MS, 800 * PS_PER_MS), PSIZE_X16: (300 * PS_PER_MS, 600 * PS_PER_MS),
              PSIZE_X32: (250 * PS_PER_MS, 500 * PS_PER_MS), PSIZE_X64: (230 * PS_PER_MS, 500 * PS_PER_MS)},
    64 * KB: {PSIZE_X8: (1200 * PS_PER_MS, 2400 * PS_PER_MS), PSIZE_X16: (700 * PS_PER_MS, 1400 * PS_PER_MS),
              PSIZE_X32: (550 * PS_PER_MS, 1100 * PS_PER_MS), PSIZE_X64: (490 * PS_PER_MS, 1100 * PS_PER_MS)},
    128 * KB: {PSIZE_X8: (2 * S, 4 * S), PSIZE_X16: (1300 * PS_PER_MS, 2600 * PS_PER_MS),
               PSIZE_X32: (1 * S, 2 * S), PSIZE_X64: (875 * PS_PER_MS, 2 * S)},
}
MASS_ERASE_TIME_PS = {PSIZE_X8: (16 * S, 32 * S), PSIZE_X16: (11 * S, 22 * S), PSIZE_X32: (8 * S, 16 * S),
                      PSIZE_X64: (6900 * PS_PER_MS, 16 * S)}
# --- the supply under a program/erase load (the weak-supply fault) ---------------------------------------------
# DS8626 "Flash memory characteristics", I_DD during program/erase, typical, as the digest notes them (it asks
# for them to be checked against the datasheet): the wider the parallelism, the more current.
PROGRAM_ERASE_CURRENT_A = {PSIZE_X8: 0.005, PSIZE_X16: 0.008, PSIZE_X32: 0.012, PSIZE_X64: 0.012}
# The lowest VDD each parallelism works at (RM0090 Table 13); x64 needs VPP, which the board does not have.
PSIZE_MIN_VDD = {PSIZE_X8: 1.8, PSIZE_X16: 2.1, PSIZE_X32: 2.7}
# The power-down threshold: with BOR off (the factory BOR_LEV) the only one, about 1.7-1.8 V (digest); a model
# choice of the lower end. BOR_LEV thresholds (falling): level 3 2.70 V, level 2 2.40 V, level 1 2.10 V.
PDR_THRESHOLD_V = 1.7
BOR_THRESHOLD_V = {0b00: 2.70, 0b01: 2.40, 0b10: 2.10}

# Modelling choices (module docstring): option-byte programming and the RDP 1 -> 0 regression mass erase.
OPTION_PROGRAM_TIME_PS = (250 * PS_PER_MS, 500 * PS_PER_MS)
REGRESSION_ERASE_TIME_PS = MASS_ERASE_TIME_PS[PSIZE_X32]


class BusFault(Exception):
    """A bus error on the virtual chip's bus (wrong flash key, RDP-blocked read, unmapped address...).
    `address`, when known, is the address of the access that failed."""

    address: Optional[int] = None


class BusWait(BusFault):
    """A debugger access the bus stalls for longer than the probe keeps retrying (the SW-DP answers WAIT):
    nothing was transferred (debug.DebugPort.wait_limit_ps)."""


def max_psize_for(supply_voltage: float) -> Optional[int]:
    """The widest PSIZE the supply allows (RM0090 Table 13); None below 1.8 V. x64 needs VPP: never here."""
    if supply_voltage < 1.8:
        return None
    if supply_voltage < 2.1:
        return PSIZE_X8
    if supply_voltage < 2.7:
        return PSIZE_X16
    return PSIZE_X32


@dataclass
class OptionBytes:
    """The non-volatile option image: the user bits of FLASH_OPTCR (RM0090 3.7.1) and the OTP area.

    `optcr` holds only the OPTCR_USER_BITS (no OPTLOCK/OPTSTRT); the factory value is 0x0FFF_AAEC: BOR off,
    software watchdog, no reset on stop/standby, RDP level 0, no sector write-protected.
    `otp` holds the 512 OTP bytes followed by the 16 lock bytes (erased: 0xFF).
    """
    optcr: int = OPTCR_FACTORY
    otp: bytearray = field(default_factory=lambda: bytearray(b"\xff" * (OTP_SIZE + OTP_LOCK_SIZE)))

    @property
    def rdp_byte(self) -> int:
        return (self.optcr & FLASH_OPTCR_RDP_MASK) >> FLASH_OPTCR_RDP_SHIFT

    @property
    def rdp_level(self) -> int:
        """0 (0xAA), 2 (0xCC), or 1 (any other value)."""
        return {RDP_LEVEL0: 0, RDP_LEVEL2: 2}.get(self.rdp_byte, 1)

    @property
    def nwrp(self) -> int:
        return (self.optcr & FLASH_OPTCR_NWRP_MASK) >> FLASH_OPTCR_NWRP_SHIFT

    @property
    def write_protected_sectors(self) -> List[int]:
        """Sectors whose nWRP bit is 0."""
        return [i for i in range(12) if not (self.nwrp >> i) & 1]

    def is_write_protected(self, sector: int) -> bool:
        return not (self.nwrp >> sector) & 1

    @property
    def hardware_watchdog(self) -> bool:
        """WDG_SW = 0: the IWDG starts by itself at every reset."""
        return not self.optcr & FLASH_OPTCR_WDG_SW

    def to_dict(self) -> Dict[str, Any]:
        return {"optcr": self.optcr, "otp": self.otp.hex()}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> OptionBytes:
        otp = bytearray.fromhex(data["otp"]) if "otp" in data else bytearray(b"\xff" * (OTP_SIZE + OTP_LOCK_SIZE))
        if len(otp) != OTP_SIZE + OTP_LOCK_SIZE:
            raise ValueError(f"OTP image must be {OTP_SIZE + OTP_LOCK_SIZE} bytes, not {len(otp)}")
        return cls(optcr=int(data["optcr"]) & OPTCR_USER_BITS, otp=otp)


@dataclass
class _Operation:
    """One program write, erase or option programming in progress."""
    kind: str  # "program", "erase", "option"
    start_ps: int
    end_ps: int
    takes: bool  # False: the supply cannot sustain the PSIZE; cells stay unchanged, OPERR at the end
    # erase: the byte ranges [start, end) of main flash, relative to FLASH_START
    ranges: List[Tuple[int, int]] = field(default_factory=list)
    # program: where and what
    address: int = 0
    data: bytes = b""
    # option programming: the new user bits; regression: also a mass erase of main flash
    new_optcr: int = 0
    regression: bool = False
    # reset_during "middle": when to cut, and the cause
    cut_at_ps: Optional[int] = None
    cut_cause: str = ""
    finished: bool = False  # effect applied; only BSY left (bsy_stuck)


def _default_request_reset(cause: str) -> None:
    raise RuntimeError(f"flash model asked for a {cause} reset but no chip is attached (set request_reset)")


class FlashInterface:
    """FLASH registers, program/erase semantics, option bytes and timing of an STM32F40x/41x."""

    def __init__(self, clock: VirtualClock, part: Part, storage: Any, options: OptionBytes,
                 faults: Faults) -> None:
        self.clock = clock
        self.part = part
        self.storage = memoryview(storage)
        if len(self.storage) != part.flash_size:
            raise ValueError(f"flash storage is {len(self.storage)} bytes, {part.name} has {part.flash_size}")
        self.options = options
        self.faults = faults
        self._sectors = part.sectors  # Part computes its sector map on every call; one program write needs it
        self._sector_starts = [s.start for s in self._sectors]
        self.debugger_attached = False
        self.request_reset: Callable[[str], None] = _default_request_reset
        self.on_operation: Optional[Callable[[str, str], None]] = None
        self.operation_counts: Dict[str, int] = {"erase": 0, "program": 0}
        self.acr = 0
        self.cr = FLASH_CR_RESET
        self.sr = 0
        self.optcr = options.optcr | FLASH_OPTCR_OPTLOCK
        self._key_step = 0  # how many correct KEYR words were written
        self._optkey_step = 0
        self._cr_key_locked = False  # a wrong key sequence locked CR until reset
        self._optcr_key_locked = False
        self._op: Optional[_Operation] = None

    # --- status seen by the chip ------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self.sr & FLASH_SR_BSY)

    def busy_until_ps(self) -> Optional[int]:
        """How long a stalled CR write or flash store must wait: `clock.now_ps` when BSY=0; else the next
        moment BSY may clear, i.e. `next_event_ps()` (the end of the operation, or the middle where a
        `reset_during` fault resets the chip); None when nothing will ever clear it (`bsy_stuck` after the
        end, or a fault's reset that the chip has not done yet). A chip stalls with
        `while flash.busy: t = flash.busy_until_ps(); if t is None: <stuck>; else: advance to t`."""
        if not self.busy:
            return self.clock.now_ps
        return self.next_event_ps()

    @property
    def reads_blocked(self) -> bool:
        """RDP level 1 with a debugger attached: main flash reads give a bus error (RM0090 3.7.3)."""
        return self.options.rdp_level == 1 and self.debugger_attached

    @property
    def cr_locked(self) -> bool:
        return bool(self.cr & FLASH_CR_LOCK)

    @property
    def psize(self) -> int:
        return (self.cr & FLASH_CR_PSIZE_MASK) >> FLASH_CR_PSIZE_SHIFT

    def set_sticky(self, bits: int) -> None:
        """Set SR error/EOP bits as an application that did not clear them would leave them."""
        self.sr |= bits & FLASH_SR_W1C

    # --- time -----------------------------------------------------------------------------------------
    def next_event_ps(self) -> Optional[int]:
        op = self._op
        if op is None or op.finished:
            return None
        if op.cut_at_ps is not None:
            return op.cut_at_ps
        return op.end_ps

    def on_time(self) -> None:
        op = self._op
        if op is None or op.finished:
            return
        now = self.clock.now_ps
        if op.cut_at_ps is not None:
            if now >= op.cut_at_ps:
                self._apply_partial(op, op.cut_at_ps)
                op.finished = True  # frozen with BSY set until the reset we ask for
                op.cut_at_ps = None
                self._notify(op.kind, "cut")
                self.request_reset(op.cut_cause)
            return
        if now >= op.end_ps:
            self._complete(op)

    def _complete(self, op: _Operation) -> None:
        if op.takes:
            self._apply_full(op)
        elif self.cr & FLASH_CR_ERRIE:
            self.sr |= FLASH_SR_OPERR
        if self.cr & FLASH_CR_EOPIE:
            self.sr |= FLASH_SR_EOP
        self._notify(op.kind, "end")
        if self.faults.bsy_stuck:
            op.finished = True
        else:
            self._op = None
            self.sr &= ~FLASH_SR_BSY

    def _apply_full(self, op: _Operation) -> None:
        if op.kind == "erase":
            for start, end in op.ranges:
                self.storage[start:end] = b"\xff" * (end - start)
        elif op.kind == "program":
            self._program_bytes(op.address, op.data)
        else:
            if op.regression:
                self.storage[:] = b"\xff" * len(self.storage)
            self.options.optcr = op.new_optcr & OPTCR_USER_BITS

    def _apply_partial(self, op: _Operation, at_ps: int) -> None:
        """The effect of an operation cut at `at_ps` (module docstring)."""
        if not op.takes:
            return
        elapsed, total = at_ps - op.start_ps, op.end_ps - op.start_ps
        if op.kind == "program":
            if 2 * elapsed >= total:
                self._program_bytes(op.address, op.data[:len(op.data) // 2])
            return
        ranges = op.ranges if op.kind == "erase" else ([(0, len(self.storage))] if op.regression else [])
        for start, end in ranges:
            done = (end - start) * elapsed // total // ROW_BYTES * ROW_BYTES
            self.storage[start:start + done] = b"\xff" * done

    def _program_bytes(self, address: int, data: bytes) -> None:
        """Programming only clears bits: each byte becomes old & new (RM0090 3.6.4)."""
        if address >= OTP_START:
            base, area = address - OTP_START, self.options.otp
            for i, byte in enumerate(data):
                area[base + i] &= byte
            return
        base = address - FLASH_START
        for i, byte in enumerate(data):
            self.storage[base + i] &= byte

    def _notify(self, kind: str, phase: str) -> None:
        if self.on_operation is not None:
            self.on_operation(kind, phase)

    # --- resets ----------------------------------------------------------------------------------------
    def system_reset(self) -> None:
        """Any reset: CR locked, SR cleared, OPTCR reloaded from the option bytes, an operation cut off."""
        op = self._op
        if op is not None and not op.finished:
            self._apply_partial(op, min(self.clock.now_ps, op.end_ps))
            self._notify(op.kind, "cut")
        self._op = None
        self.acr = 0
        self.cr = FLASH_CR_RESET
        self.sr = 0
        self.optcr = self.options.optcr | FLASH_OPTCR_OPTLOCK
        self._key_step = self._optkey_step = 0
        self._cr_key_locked = self._optcr_key_locked = False

    # --- registers -------------------------------------------------------------------------------------
    def read_register(self, offset: int, size: int = 4) -> int:
        self.on_time()
        word_offset, shift = offset & ~3, (offset & 3) * 8
        word = self._read_word(word_offset)
        return (word >> shift) & ((1 << (8 * size)) - 1)

    def _read_word(self, offset: int) -> int:
        if offset == ACR_OFFSET:
            return self.acr
        if offset == SR_OFFSET:
            return self.sr & SR_READABLE
        if offset == CR_OFFSET:
            strt = FLASH_CR_STRT if (self._op is not None and self._op.kind == "erase") else 0
            return (self.cr & CR_STORED) | strt
        if offset == OPTCR_OFFSET:
            optstrt = FLASH_OPTCR_OPTSTRT if (self._op is not None and self._op.kind == "option") else 0
            return self.optcr | optstrt
        return 0  # KEYR, OPTKEYR read as 0; reserved space

    def write_register(self, offset: int, value: int, size: int = 4) -> None:
        """A bus write to the FLASH interface. Raises BusFault for a wrong key sequence."""
        self.on_time()
        word_offset, shift = offset & ~3, (offset & 3) * 8
        lanes = ((1 << (8 * size)) - 1) << shift
        value = (value << shift) & lanes
        if word_offset == KEYR_OFFSET:
            self._write_key(value if size == 4 else None)
        elif word_offset == OPTKEYR_OFFSET:
            self._write_optkey(value if size == 4 else None)
        elif word_offset == ACR_OFFSET:
            self.acr = ((self.acr & ~lanes) | value) & ACR_WRITABLE
        elif word_offset == SR_OFFSET:
            self.sr &= ~(value & FLASH_SR_W1C)
        elif word_offset == CR_OFFSET:
            self._write_cr(((self.cr & CR_STORED) & ~lanes) | value)
        elif word_offset == OPTCR_OFFSET:
            self._write_optcr((self.optcr & ~lanes) | value)

    def _write_key(self, value: Optional[int]) -> None:
        # RM0090 3.6.1: KEY1 then KEY2; any wrong sequence gives a bus error and locks CR until reset.
        expected = FLASH_KEY1 if self._key_step == 0 else FLASH_KEY2
        if self._cr_key_locked or not self.cr_locked or value != expected:
            self._cr_key_locked = True
            self._key_step = 0
            self.cr |= FLASH_CR_LOCK
            raise BusFault(f"wrong FLASH_KEYR sequence (wrote {value if value is None else hex(value)}): "
                           "FLASH_CR locked until reset")
        self._key_step += 1
        if self._key_step == 2:
            self._key_step = 0
            self.cr &= ~FLASH_CR_LOCK

    def _write_optkey(self, value: Optional[int]) -> None:
        # RM0090 3.7.2: OPTKEY1 then OPTKEY2 clears OPTLOCK; a wrong sequence locks OPTCR until reset.
        expected = FLASH_OPTKEY1 if self._optkey_step == 0 else FLASH_OPTKEY2
        if self._optcr_key_locked or not self.optcr & FLASH_OPTCR_OPTLOCK or value != expected:
            self._optcr_key_locked = True
            self._optkey_step = 0
            self.optcr |= FLASH_OPTCR_OPTLOCK
            raise BusFault(f"wrong FLASH_OPTKEYR sequence (wrote {value if value is None else hex(value)}): "
                           "FLASH_OPTCR locked until reset")
        self._optkey_step += 1
        if self._optkey_step == 2:
            self._optkey_step = 0
            self.optcr &= ~FLASH_OPTCR_OPTLOCK

    def _write_cr(self, value: int) -> None:
        if self.cr_locked:
            return  # RM0090 3.6.1: CR cannot be written while locked
        if self.busy:
            return  # the bus would stall; only reachable when BSY never clears (module docstring)
        self.cr = value & CR_STORED
        if value & FLASH_CR_STRT:
            self._start_erase()

    def _refused_by_sticky_flags(self) -> bool:
        """A new operation does not start while sequence errors from before are still set (RM0090 3.6.4)."""
        if self.sr & SEQUENCE_ERRORS:
            self.sr |= FLASH_SR_PGSERR
            return True
        return False

    def _start_erase(self) -> None:
        cr = self.cr
        ser, mer = bool(cr & FLASH_CR_SER), bool(cr & FLASH_CR_MER)
        if not ser and not mer:
            return  # STRT without SER/MER: nothing happens
        if self._refused_by_sticky_flags():
            return
        if cr & FLASH_CR_PG:
            self.sr |= FLASH_SR_PGSERR  # erase started with PG set: sequence error
            return
        sectors = self._sectors
        if self.options.rdp_level == 1 and self.debugger_attached:
            self.sr |= FLASH_SR_WRPERR  # RDP level 1 intrusion: nothing can be erased
            return
        if ser and mer:
            self.sr |= FLASH_SR_WRPERR
            return
        psize = self.psize
        choice = 1 if self.faults.max_timing else 0
        if mer:
            if any(self.options.is_write_protected(s.index) for s in sectors):
                self.sr |= FLASH_SR_WRPERR
                return
            ranges = [(0, self.part.flash_size)]
            duration = MASS_ERASE_TIME_PS[psize][choice]
        else:
            snb = (cr & FLASH_CR_SNB_MASK) >> FLASH_CR_SNB_SHIFT
            if snb >= len(sectors) or self.options.is_write_protected(snb):
                self.sr |= FLASH_SR_WRPERR
                return
            sector = sectors[snb]
            ranges = [(sector.start - FLASH_START, sector.end - FLASH_START)]
            duration = ERASE_TIME_PS[sector.size][psize][choice]
        op = _Operation("erase", self.clock.now_ps, self.clock.now_ps + duration, self._supply_allows(psize),
                        ranges=ranges)
        self._begin(op)

    def _supply_allows(self, psize: int) -> bool:
        widest = max_psize_for(self.faults.supply_voltage)
        return widest is not None and psize <= widest

    def loaded_vdd(self, psize: int) -> float:
        """VDD while an erase or program at `psize` draws its current through the weak-supply fault's source
        resistance (the supply voltage itself without that fault)."""
        ohms = self.faults.supply_resistance_ohm or 0.0
        return self.faults.supply_voltage - ohms * PROGRAM_ERASE_CURRENT_A[psize]

    def _supply_sags(self, op: _Operation) -> bool:
        """The weak-supply fault, applied when an erase or program starts (module docstring): below the power-down
        or BOR threshold the chip resets (the operation does not start: True); below the PSIZE's minimum the
        operation runs but does not take (OPERR at the end)."""
        if self.faults.supply_resistance_ohm is None or op.kind not in ("erase", "program"):
            return False
        psize = self.psize
        vdd = self.loaded_vdd(psize)
        bor = BOR_THRESHOLD_V.get((self.options.optcr & FLASH_OPTCR_BOR_LEV_MASK) >> FLASH_OPTCR_BOR_LEV_SHIFT)
        if vdd < PDR_THRESHOLD_V:
            self.request_reset("brownout")  # power-down reset: BORRSTF, PORRSTF (and PINRSTF)
            return True
        if bor is not None and vdd < bor:
            self.request_reset("bor")  # BORRSTF without PORRSTF
            return True
        if vdd < PSIZE_MIN_VDD.get(psize, float("inf")):
            op.takes = False
        return False

    def _begin(self, op: _Operation) -> None:
        """Count the operation, fire a `reset_during` fault if it matches, else start it (BSY=1)."""
        if self._supply_sags(op):
            return
        cut_cause = ""
        cut_phase = ""
        if op.kind in self.operation_counts:
            self.operation_counts[op.kind] += 1
            for rule in self.faults.reset_during:
                if rule.operation == op.kind and rule.nth == self.operation_counts[op.kind]:
                    cut_cause, cut_phase = rule.cause, rule.phase
                    break
        if cut_phase == "start":
            self.request_reset(cut_cause)  # before anything changes
            return
        if cut_phase == "middle":
            op.cut_at_ps = op.start_ps + (op.end_ps - op.start_ps) // 2
            op.cut_cause = cut_cause
        self._op = op
        self.sr |= FLASH_SR_BSY
        self._notify(op.kind, "start")

    def _write_optcr(self, value: int) -> None:
        if self.optcr & FLASH_OPTCR_OPTLOCK or self._optcr_key_locked:
            return  # RM0090 3.7.2: OPTCR is write-protected while OPTLOCK=1
        if self.busy:
            return  # the bus would stall; only reachable when BSY never clears
        self.optcr = value & (OPTCR_USER_BITS | FLASH_OPTCR_OPTLOCK)
        if value & FLASH_OPTCR_OPTSTRT:
            self._start_option_programming()

    def _start_option_programming(self) -> None:
        current = self.options
        if current.rdp_level == 2:
            self.sr |= FLASH_SR_WRPERR  # level 2: option bytes can never change again
            return
        new_optcr = self.optcr & OPTCR_USER_BITS
        new_rdp = (new_optcr & FLASH_OPTCR_RDP_MASK) >> FLASH_OPTCR_RDP_SHIFT
        regression = current.rdp_level == 1 and new_rdp == RDP_LEVEL0
        choice = 1 if self.faults.max_timing else 0
        duration = OPTION_PROGRAM_TIME_PS[choice] + (REGRESSION_ERASE_TIME_PS[choice] if regression else 0)
        now = self.clock.now_ps
        self._begin(_Operation("option", now, now + duration, True, new_optcr=new_optcr, regression=regression))

    # --- stores into flash -----------------------------------------------------------------------------
    def write_flash(self, address: int, size: int, value: int) -> None:
        """A store of `size` bytes at `address` (main flash 0x0800_0000.. or OTP), by the core or debugger."""
        self.on_time()
        if self.busy:
            self.sr |= FLASH_SR_PGSERR  # only reachable when BSY never clears (module docstring)
            return
        if not self.cr & FLASH_CR_PG or self.cr_locked:
            self.sr |= FLASH_SR_PGSERR  # RM0090 3.6.4: a write into flash while PG=0 is a sequence error
            return
        if self._refused_by_sticky_flags():
            return
        if self.options.rdp_level == 1 and self.debugger_attached:
            self.sr |= FLASH_SR_WRPERR
            return
        if not self._writable(address, size):
            self.sr |= FLASH_SR_WRPERR
            return
        psize = self.psize
        if size != PSIZE_BYTES[psize]:
            self.sr |= FLASH_SR_PGPERR
            return
        if address % ROW_BYTES + size > ROW_BYTES:
            self.sr |= FLASH_SR_PGAERR
            return
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        choice = 1 if self.faults.max_timing else 0
        now = self.clock.now_ps
        self._begin(_Operation("program", now, now + PROGRAM_TIME_PS[choice], self._supply_allows(psize),
                               address=address, data=data))

    def _writable(self, address: int, size: int) -> bool:
        """False (WRPERR) for write-protected sectors, locked OTP blocks and everything else not programmable."""
        last = address + size - 1
        if FLASH_START <= address and last < self.part.flash_end:
            first_sector = bisect_right(self._sector_starts, address) - 1
            last_sector = bisect_right(self._sector_starts, last) - 1
            return not any(self.options.is_write_protected(i) for i in range(first_sector, last_sector + 1))
        if OTP_START <= address and last < OTP_START + OTP_SIZE:
            first_block, last_block = (address - OTP_START) // OTP_BLOCK_BYTES, (last - OTP_START) // OTP_BLOCK_BYTES
            return all(self.options.otp[OTP_SIZE + b] == 0xFF for b in range(first_block, last_block + 1))
        if OTP_LOCK_START <= address and last < OTP_LOCK_START + OTP_LOCK_SIZE:
            return True
        return False  # system memory, option bytes area, anything else


__all__ = ["BusFault", "FlashInterface", "OptionBytes", "max_psize_for"]
