"""The virtual STM32F407: one `Chip` object, the façade over the models and the core.

`Chip` ties the models together (docs/sim.md): `flash.py` (FLASH interface, option bytes), `peripherals.py`
(RCC, IWDG, CRC), `debug.py` (PPB: SCS, DWT, FPB, ROM table, DBGMCU). Its methods live by concern in:

| module | what |
|---|---|
| `base.py` (`ChipBase`) | the shared state, declared once; IWDG/CYCCNT bookkeeping that follows the run state |
| `memory_map.py` | what backs each address; OTP/option-byte page layout; system memory image |
| `bus.py` (`ChipBus`) | the debugger's bus (`bus_read`/`bus_write`/`bus_*_block`), the core's MMIO, flash stores |
| `flash_wait.py` (`ChipFlashWait`) | FLASH register accesses, poll skipping, stalls while BSY=1 |
| `core.py` (`ChipCore`) | Unicorn, `advance`/`run_until_halted`, idle loops, halt/step, the register file |
| `exceptions.py` (`ChipExceptions`) | HardFault, SVC, exception return, lockup, resets and NRST |
| `armv7m.py` | ARMv7-M numbers (xPSR, EXC_RETURN, REGSEL) |

This module holds `__init__` (which sets every attribute `ChipBase` declares), persistence and conveniences
for tests and tools. Import `Chip` and the public constants from here.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from f4load.part import KB, Part, part_for_flash_kb
from f4load.registers import CRC_BASE, FLASH_BASE, IWDG_BASE, RCC_BASE
from f4load.sim.armv7m import (
    REGSEL_FPSCR,
    REGSEL_LR,
    REGSEL_MSP,
    REGSEL_PC,
    REGSEL_PSP,
    REGSEL_S0,
    REGSEL_SP,
    REGSEL_SPECIAL,
    REGSEL_XPSR,
)
from f4load.sim.bus import Bus, PeriphRead, PeriphWrite
from f4load.sim.clock import VirtualClock
from f4load.sim.core import CYCLE_PS, ChipCore, new_cortex_m4, scan_block
from f4load.sim.debug import DFSR_HALTED, SystemControlSpace
from f4load.sim.exceptions import RESET_CAUSES, ChipExceptions
from f4load.sim.faults import Faults
from f4load.sim.flash import FlashInterface, OptionBytes
from f4load.sim.flash_port import FlashPort
from f4load.sim.memory import Memory
from f4load.sim.peripherals import CrcUnit, Iwdg, Rcc, WatchdogClock

if TYPE_CHECKING:
    from f4load.sim.state import ChipState

# Part identity of a clone (faults.clone): same DEV_ID, a REV_ID ST never shipped for the F40x/41x.
CLONE_REV_ID = 0x2001


class Chip(ChipCore, ChipExceptions):
    """One STM32F405/407/415/417 (see the module docstrings of chip, core, bus and exceptions)."""

    def __init__(self, faults: Faults, state: Optional[ChipState] = None,
                 clock: Optional[VirtualClock] = None) -> None:
        if state is None:
            from f4load.sim.state import ChipState

            state = ChipState.factory_new(faults)
        self.faults = faults
        self.clock = clock if clock is not None else VirtualClock()
        _key, part = part_for_flash_kb(len(state.flash) // KB)
        if faults.clone:
            part = dataclasses.replace(part, rev_id=CLONE_REV_ID)
        self.part: Part = part
        self.options: OptionBytes = state.options
        self.unique_id = bytes(state.unique_id)

        # --- core and debug state (docs/sim.md) -------------------------------------------------------
        self.halted = False
        self.lockup = False
        self.sleeping = False
        self.dfsr = 0
        self.demcr = 0
        self.debugen = False
        self.reset_seen = False  # DHCSR.S_RESET_ST
        self.retired = False  # DHCSR.S_RETIRE_ST
        self._nrst = False
        self.active_exception = 0  # IPSR
        self._exception_stack: List[int] = []
        self._thumb = True  # EPSR.T
        self.core_ps = 0  # when the core's next instruction executes (may run ahead of the clock)
        self._idle_until: Optional[int] = None  # poll skipping: the core waits until then
        self._wait_flash = False  # stalled on a flash access while BSY=1
        self.block_address = -1  # the translated block the core is executing
        self.in_run = False
        self.stepping = False
        self.deadline = 0
        self._stop: Optional[Tuple] = None  # why the current run stopped (set by hooks)
        self._pending_reset: Optional[str] = None
        self._last_reset: Optional[Tuple[str, int, int]] = None
        self._resume_pc: Optional[int] = None  # an FPB breakpoint here is skipped once after a resume
        # counters for tests and tools
        self.instructions = 0
        self.resets: Dict[str, int] = {}
        self.power_cycles = 0  # POR/BOR resets so far; the DebugPort powers down when it changes
        self.idle_loops = 0

        # --- memory ---------------------------------------------------------------------------------
        self.uc = new_cortex_m4()
        self.memory = Memory(self.uc, state.flash)
        self._fixups = self.memory.fixups
        self._block_sizes = self.memory.block_sizes
        self._bp_hooks: Dict[int, int] = {}

        # --- models ---------------------------------------------------------------------------------
        self.flash = FlashInterface(self.clock, part, memoryview(self.memory.flash), self.options, faults)
        self.flash.request_reset = self.request_reset
        self.flash.on_operation = self._on_flash_operation
        self.on_flash_operation: Optional[Callable[[str, str], None]] = None  # for tools: (kind, phase)
        self.rcc = Rcc()
        self.iwdg = Iwdg(faults.lsi_hz)
        self.crc = CrcUnit(lambda: self.rcc.crc_enabled, broken=faults.crc_broken)
        self.watchdog = WatchdogClock(self.iwdg, self.clock)
        self.flash_port = FlashPort(self.clock, self.flash, self.memory, self, self.watchdog, self.advance)
        self._build_unicorn()
        self.scs = SystemControlSpace(self)
        self._periph_read: Dict[int, PeriphRead] = {
            CRC_BASE: self.crc.read, RCC_BASE: self.rcc.read, IWDG_BASE: self.watchdog.read,
            FLASH_BASE: self.flash_port.read_register}
        self._periph_write: Dict[int, PeriphWrite] = {
            CRC_BASE: self.crc.write, RCC_BASE: self.rcc.write, IWDG_BASE: self.watchdog.write,
            FLASH_BASE: self.flash_port.write_register}
        f_size = self.memory.flash_size if faults.f_size_kb is None else faults.f_size_kb * KB
        self.bus = Bus(self.memory, self.flash, self.flash_port, self.scs, self, self._periph_read,
                       self._periph_write, self.options, self.unique_id, f_size)

    def _on_flash_operation(self, kind: str, phase: str) -> None:
        """The flash model's notification: changed flash contents invalidate translated code."""
        if phase in ("end", "cut"):
            self.memory.flash_changed = True
        if self.on_flash_operation is not None:
            self.on_flash_operation(kind, phase)

    def bus_read(self, address: int, size: int) -> int:
        return self.bus.read(address, size)

    def bus_write(self, address: int, size: int, value: int) -> None:
        self.bus.write(address, size, value)

    def bus_read_block(self, address: int, length: int) -> bytes:
        return self.bus.read_block(address, length)

    def bus_write_block(self, address: int, data: bytes) -> None:
        self.bus.write_block(address, data)

    @property
    def debugger_wait_limit_ps(self) -> Optional[int]:
        return self.flash_port.debugger_wait_limit_ps

    @debugger_wait_limit_ps.setter
    def debugger_wait_limit_ps(self, limit: Optional[int]) -> None:
        self.flash_port.debugger_wait_limit_ps = limit

    @property
    def poll_skips(self) -> int:
        return self.flash_port.poll_skips

    # ==========================================================================================================
    # Option bytes, persistence and conveniences for tests and tools
    def apply_option_faults(self) -> None:
        """Program the option-byte faults (write_protected, rdp_level1, hardware_watchdog) into the option
        bytes, as someone with a programmer would have; they take effect like loaded option bytes."""
        from f4load.sim.state import program_option_faults

        program_option_faults(self.options, self.faults)
        self.flash.system_reset()

    def to_state(self) -> ChipState:
        from f4load.sim.state import ChipState

        self.memory.apply_fixups()
        return ChipState(flash=bytearray(self.memory.flash), options=self.options, unique_id=self.unique_id,
                         faults=self.faults)

    @property
    def pc(self) -> int:
        return self.read_core_register(REGSEL_PC)

    def load(self, address: int, data: bytes) -> None:
        """Put bytes into RAM or flash storage directly (tests, tools): no flash rules, no time."""
        self.memory.load(address, data)


__all__ = ["CLONE_REV_ID", "CYCLE_PS", "DFSR_HALTED", "REGSEL_FPSCR", "REGSEL_LR", "REGSEL_MSP", "REGSEL_PC",
           "REGSEL_PSP", "REGSEL_S0", "REGSEL_SP", "REGSEL_SPECIAL", "REGSEL_XPSR", "RESET_CAUSES", "Chip",
           "scan_block"]
