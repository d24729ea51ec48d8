"""The virtual STM32F407: one `Chip`, assembled from parts that each own their state (docs/sim.md).

`Chip.__init__` builds the parts and wires them, the peripherals onto the memory map in one place (QEMU's
`stm32f405_soc.c` and Renode's platform files are the model); afterwards a part reaches only the parts it was
given, through the small interfaces named below.

- `Memory` (memory.py) owns the flash bytes, Unicorn's RAM and system memory, the fixups after core stores
  into read-only memory, the dirty ranges and the translated code.
- `FlashInterface` (flash.py) owns the FLASH registers, program/erase, option bytes and their timing; `Rcc`,
  `Iwdg`, `CrcUnit` (peripherals.py) their registers; `WatchdogClock` gates the IWDG.
- `Core` (core.py) owns Unicorn, a run, idle loops, halt/step, the register file, the run and debug state;
  it hands on to memory, flash port, exceptions (`ExceptionEntry`) and the reset controller (`reset`).
- `SystemControlSpace` (debug.py) owns SCS, DWT, FPB, ITM, TPIU, ETM, DBGMCU, ROM table; reaches the core
  through `DebugCore`.
- `FlashPort` (flash_port.py) owns FLASH on the bus: poll skipping, stalls while BSY=1; moves the core's time
  through `CoreTiming`.
- `Bus` (bus.py) dispatches the debugger's and the core's accesses by region over memory, flash port, SCS and
  peripherals; tells the core about faults and I/O through `CoreSide`.
- `Exceptions` (exceptions.py) enters and returns from exceptions on the core's registers (owns nothing).
- `ResetController` (resets.py) owns reset causes and counts, NRST and the reset sequence over the parts.

The chip itself keeps time (`advance`: the events of the flash and the IWDG, and slices for the core), keeps
the IWDG and CYCCNT in step with the core's run state (`_run_state_changed`), and is the façade that tests,
tools and the debug port use: the debugger's bus (`bus_*`), core control and registers, resets and NRST,
counters, persistence. The debug port (`debug.DebugPort`) reaches the chip only through `debug.DebugTarget`.

Time (docs/sim.md): `advance(ps)` moves `clock.now_ps` forward by exactly `ps`, handling events (end of a flash
operation, IWDG expiry, a reset the flash model asks for) at their time; between them the core runs if it can
(core.py). `run_until_halted(limit)` advances until the core halts (the clock stops there) or the limit passes.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Dict, Optional

from f4load import interrupt
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
from f4load.sim.clock import CYCLE_PS, VirtualClock
from f4load.sim.core import Core, new_cortex_m4, scan_block
from f4load.sim.debug import DFSR_HALTED, SystemControlSpace
from f4load.sim.exceptions import Exceptions
from f4load.sim.faults import Faults
from f4load.sim.flash import FlashInterface, OptionBytes
from f4load.sim.flash_port import FlashPort
from f4load.sim.memory import Memory
from f4load.sim.peripherals import CrcUnit, Iwdg, Rcc, WatchdogClock
from f4load.sim.resets import RESET_CAUSES, ResetController

if TYPE_CHECKING:
    from f4load.sim.state import ChipState

# Part identity of a clone (faults.clone): same DEV_ID, a REV_ID ST never shipped for the F40x/41x.
CLONE_REV_ID = 0x2001


class Chip:
    """One STM32F405/407/415/417 (module docstring)."""

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

        # --- the parts, each given the parts it talks to ------------------------------------------------------
        self.memory = Memory(new_cortex_m4(), state.flash)
        self.flash = FlashInterface(self.clock, part, memoryview(self.memory.flash), self.options, faults)
        self.rcc = Rcc()
        self.iwdg = Iwdg(faults.lsi_hz)
        self.watchdog = WatchdogClock(self.iwdg, self.clock)
        self.crc = CrcUnit(lambda: self.rcc.crc_enabled, broken=faults.crc_broken)
        self.core = Core(self.memory.uc, self.clock, self.memory, self.flash, self._run_state_changed)
        self.scs = SystemControlSpace(self.core, self.clock, part, faults.clone, self._freeze_changed)
        self.flash_port = FlashPort(self.clock, self.flash, self.memory, self.core, self.watchdog, self.advance)
        # The peripherals on the memory map (RM0090 Table 1): one read/write handler pair per 1 KB block.
        self._periph_read: Dict[int, PeriphRead] = {
            FLASH_BASE: self.flash_port.read_register, RCC_BASE: self.rcc.read, CRC_BASE: self.crc.read,
            IWDG_BASE: self.watchdog.read}
        self._periph_write: Dict[int, PeriphWrite] = {
            FLASH_BASE: self.flash_port.write_register, RCC_BASE: self.rcc.write, CRC_BASE: self.crc.write,
            IWDG_BASE: self.watchdog.write}
        f_size = self.memory.flash_size if faults.f_size_kb is None else faults.f_size_kb * KB
        self.bus = Bus(self.memory, self.flash, self.flash_port, self.scs, self.core, self._periph_read,
                       self._periph_write, self.options, self.unique_id, f_size)
        self.exceptions = Exceptions(self.core, self.scs, self.memory, self.bus)
        self.reset_controller = ResetController(self.clock, self.core, self.memory, self.bus, self.scs,
                                                self.flash, self.rcc, self.watchdog, self.crc, self.options,
                                                faults, self._run_state_changed)
        self.core.connect(self.exceptions, self.flash_port, self.reset_controller.reset)
        self.flash.request_reset = self.core.request_reset
        self.flash.on_operation = self._on_flash_operation
        self.on_flash_operation: Optional[Callable[[str, str], None]] = None  # for tools: (kind, phase)
        self._halt_stops_advance = False

    # ==========================================================================================================
    # Time
    def advance(self, ps: int) -> None:
        """Let `ps` picoseconds pass: the core runs if it can, flash operations progress, the IWDG counts.

        Ctrl-C never lands inside Unicorn or its callbacks: signals are only recorded while the chip runs
        (f4load.interrupt.deferred) and raised as Interrupted when `advance` returns, with the chip in a
        consistent state - unless a host around it defers them too (f4load's Session), which then stops at
        its own safe point."""
        if ps < 0:
            raise ValueError("virtual time cannot go backwards")
        with interrupt.deferred(raise_on_exit=True):
            self._advance(ps)

    def _advance(self, ps: int) -> None:
        clock, core = self.clock, self.core
        target = clock.now_ps + ps
        while True:
            self._process_events()
            now = clock.now_ps
            if now >= target or (core.halted and self._halt_stops_advance):
                break
            end = target
            runs = core.can_run()
            event = self._next_event_ps(runs)
            if event is not None and event < end:
                end = event
            if runs:
                core.run_until(end)
            else:
                clock.now_ps = end

    def run_until_halted(self, limit_ps: int) -> bool:
        """Advance until the core halts or `limit_ps` has passed, whichever is first (the clock stops at the
        halt, give or take the rest of the block). True if the core is halted. For hosts with no link cost."""
        end = self.clock.now_ps + limit_ps
        while not self.core.halted and self.clock.now_ps < end:
            self._halt_stops_advance = True
            try:
                self.advance(end - self.clock.now_ps)
            finally:
                self._halt_stops_advance = False
        return self.core.halted

    def _process_events(self) -> None:
        self.watchdog.sync()
        self.flash.on_time()
        if self.iwdg.expired:
            self.reset_controller.reset("iwdg")

    def _next_event_ps(self, core_runs: bool) -> Optional[int]:
        """The next time something must happen outside the core. The normal end of a flash operation is not
        an event while the core runs: the core sees it when it next touches the flash (each access brings the
        model up to time), so a program loop needs no restart per word. A cut (reset_during) always is."""
        flash_next = self.flash.next_event_ps()
        if core_runs and flash_next is not None and flash_next == self.flash.busy_until_ps():
            flash_next = None
        times = [flash_next, self.watchdog.expiry_ps(), *self.core.wake_times()]
        present = [t for t in times if t is not None and t > self.clock.now_ps]
        return min(present) if present else None

    # --- what follows the core's run state -------------------------------------------------------------------
    def _run_state_changed(self) -> None:
        """The core halted, resumed or reset, or NRST changed: the IWDG and CYCCNT settle with the old state,
        then follow the new one."""
        self.watchdog.set_counting(self._iwdg_counts())
        self.scs.sync_cycle_counter()

    def _freeze_changed(self) -> None:
        """DBGMCU_APB1_FZ was written: the IWDG settles, then follows DBG_IWDG_STOP."""
        self.watchdog.set_counting(self._iwdg_counts())

    def _iwdg_counts(self) -> bool:
        """The IWDG stops while the core is halted and DBGMCU_APB1_FZ.DBG_IWDG_STOP is set (RM0090 38.16.4),
        and while NRST holds the chip in reset."""
        core = self.core
        if core.held_in_reset:
            return False
        return not (core.halted and self.scs.iwdg_frozen_when_halted)

    def _on_flash_operation(self, kind: str, phase: str) -> None:
        """The flash model's notification: changed flash contents invalidate translated code."""
        if phase in ("end", "cut"):
            self.memory.flash_changed = True
        if self.on_flash_operation is not None:
            self.on_flash_operation(kind, phase)

    # ==========================================================================================================
    # The debugger's bus (AHB-AP): BusFault on error; no time passes except while a flash access stalls.
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
        """How long a debugger access may stall before the probe gives up (DebugPort.wait_limit_ps)."""
        return self.flash_port.debugger_wait_limit_ps

    @debugger_wait_limit_ps.setter
    def debugger_wait_limit_ps(self, limit: Optional[int]) -> None:
        self.flash_port.debugger_wait_limit_ps = limit

    # --- beside the bus: the debugger's connection, the supply -------------------------------------------------
    @property
    def debugger_attached(self) -> bool:
        """A debugger is connected (SWD): the RDP level 1 intrusion rule (RM0090 3.7.3)."""
        return self.flash.debugger_attached

    @debugger_attached.setter
    def debugger_attached(self, attached: bool) -> None:
        self.flash.debugger_attached = attached

    @property
    def supply_voltage(self) -> float:
        """VDD (the `vdd=` fault; 3.3 V)."""
        return float(self.faults.supply_voltage)

    # ==========================================================================================================
    # The core: run and debug state, registers (used by the SCS through DebugCore, and by tests and tools)
    @property
    def halted(self) -> bool:
        return self.core.halted

    @property
    def lockup(self) -> bool:
        return self.core.lockup

    @property
    def sleeping(self) -> bool:
        return self.core.sleeping

    @property
    def debugen(self) -> bool:
        """DHCSR.C_DEBUGEN."""
        return self.core.debugen

    @debugen.setter
    def debugen(self, enabled: bool) -> None:
        self.core.debugen = enabled

    @property
    def demcr(self) -> int:
        return self.core.demcr

    @demcr.setter
    def demcr(self, value: int) -> None:
        self.core.demcr = value

    @property
    def dfsr(self) -> int:
        return self.core.dfsr

    @dfsr.setter
    def dfsr(self, value: int) -> None:
        self.core.dfsr = value

    @property
    def reset_seen(self) -> bool:
        """DHCSR.S_RESET_ST (sticky until DHCSR is read)."""
        return self.core.reset_seen

    @property
    def retired(self) -> bool:
        """DHCSR.S_RETIRE_ST (sticky until DHCSR is read)."""
        return self.core.retired

    @property
    def active_exception(self) -> int:
        """IPSR."""
        return self.core.active_exception

    def halt(self, dfsr_bits: int) -> None:
        self.core.halt(dfsr_bits)

    def resume(self) -> None:
        self.core.resume()

    def step(self) -> None:
        self.core.step()

    def read_core_register(self, regsel: int) -> int:
        return self.core.read_core_register(regsel)

    def write_core_register(self, regsel: int, value: int) -> None:
        self.core.write_core_register(regsel, value)

    @property
    def pc(self) -> int:
        return self.core.read_core_register(REGSEL_PC)

    # --- resets and NRST (resets.py) ------------------------------------------------------------------------
    def reset(self, cause: str) -> None:
        self.reset_controller.reset(cause)

    def request_reset(self, cause: str) -> None:
        self.core.request_reset(cause)

    def power_on(self) -> None:
        self.reset_controller.power_on()

    @property
    def nrst_asserted(self) -> bool:
        return self.reset_controller.nrst_asserted

    @nrst_asserted.setter
    def nrst_asserted(self, asserted: bool) -> None:
        self.reset_controller.nrst_asserted = asserted

    # --- counters for tests and tools -------------------------------------------------------------------------
    @property
    def instructions(self) -> int:
        return self.core.instructions

    @property
    def idle_loops(self) -> int:
        return self.core.idle_loops

    @property
    def poll_skips(self) -> int:
        return self.flash_port.poll_skips

    @property
    def resets(self) -> Dict[str, int]:
        """Resets so far, by cause."""
        return self.reset_controller.counts

    @property
    def power_cycles(self) -> int:
        """POR/BOR resets so far; the DebugPort powers down when it changes."""
        return self.reset_controller.power_cycles

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

    def load(self, address: int, data: bytes) -> None:
        """Put bytes into RAM or flash storage directly (tests, tools): no flash rules, no time."""
        self.memory.load(address, data)


__all__ = ["CLONE_REV_ID", "CYCLE_PS", "DFSR_HALTED", "REGSEL_FPSCR", "REGSEL_LR", "REGSEL_MSP", "REGSEL_PC",
           "REGSEL_PSP", "REGSEL_S0", "REGSEL_SP", "REGSEL_SPECIAL", "REGSEL_XPSR", "RESET_CAUSES", "Chip",
           "scan_block"]
