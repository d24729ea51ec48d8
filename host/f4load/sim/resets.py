"""The virtual STM32F407's resets: causes, the NRST pin, and what a reset does to each part.

`ResetController` owns the reset bookkeeping (how many resets of each cause, `power_cycles`, the last reset)
and runs the reset sequence over the parts: the flash interface, RCC, IWDG, CRC, the System Control Space,
the memory's translated code and the core. The core asks for resets through it (`Core.request_reset` defers a
request made while it runs until the instruction is abandoned, then calls `reset`).

Resets: `reset(cause)` with "por", "bor"/"brownout" (power: also the debug domain), "pin", "sysresetreq",
"iwdg" (system reset: flash, RCC, IWDG, CRC, SCB, core) and "vectreset" (core only). RCC_CSR flags come from
`peripherals.RESET_FLAGS_FOR_CAUSE`. `nrst_asserted = True` is a pin reset by itself (no separate
`reset("pin")` is needed) and holds the chip in reset until released (`Core.held_in_reset`). After a reset the
core starts from the vector table at 0x0 (erased flash: PC 0xFFFF_FFFE, which locks the core up when it runs),
unless NRST is held, or DEMCR.VC_CORERESET halts it before the first instruction, or the debugger has a halt
pending. When the core does start, the application's effects from `faults` are applied at once
(`_application_runs`): IWDG started, sticky SR bits, a bad FLASH_KEYR write.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

from f4load.registers import FLASH_BASE, FLASH_KEYR
from f4load.sim.bus import Bus
from f4load.sim.clock import VirtualClock
from f4load.sim.core import Core
from f4load.sim.debug import DEMCR_VC_CORERESET, DFSR_VCATCH, SystemControlSpace
from f4load.sim.faults import Faults
from f4load.sim.flash import BusFault, FlashInterface, OptionBytes
from f4load.sim.memory import Memory
from f4load.sim.peripherals import RESET_FLAGS_FOR_CAUSE, CrcUnit, Rcc, WatchdogClock, iwdg_settings_for

RESET_CAUSES = ("por", "bor", "brownout", "pin", "sysresetreq", "iwdg", "vectreset")
POWER_RESETS = ("por", "bor", "brownout")
BAD_FLASH_KEY = 0x0BAD_0BAD  # what the "application" of the cr_locked_by_bad_key fault writes to FLASH_KEYR


class ResetController:
    """Reset causes, NRST and the reset sequence over the chip's parts (module docstring)."""

    def __init__(self, clock: VirtualClock, core: Core, memory: Memory, bus: Bus, scs: SystemControlSpace,
                 flash: FlashInterface, rcc: Rcc, watchdog: WatchdogClock, crc: CrcUnit, options: OptionBytes,
                 faults: Faults, run_state_changed: Callable[[], None]) -> None:
        self._clock = clock
        self._core = core
        self._memory = memory
        self._bus = bus
        self._scs = scs
        self._flash = flash
        self._rcc = rcc
        self._watchdog = watchdog
        self._crc = crc
        self._options = options
        self._faults = faults
        self._run_state_changed = run_state_changed
        self.counts: Dict[str, int] = {}  # resets so far, by cause
        self.power_cycles = 0  # power-level resets (POR/BOR): the debug domain (SW-DP) lost power too
        self._last_reset: Optional[Tuple[str, int, int]] = None  # (cause, time, instructions)

    @property
    def nrst_asserted(self) -> bool:
        return self._core.held_in_reset

    @nrst_asserted.setter
    def nrst_asserted(self, asserted: bool) -> None:
        """NRST low: a pin reset, then the chip stays in reset (time passes, no instructions) until released.
        A probe that already called `reset("pin")` at this very moment does not cause a second one."""
        core = self._core
        asserted = bool(asserted)
        if asserted == core.held_in_reset:
            return
        if asserted:
            core.held_in_reset = True
            same = self._last_reset == ("pin", self._clock.now_ps, core.instructions)
            self._system_reset("pin", count=not same)
        else:
            core.held_in_reset = False
            self._run_state_changed()
            self._leave_reset()

    def reset(self, cause: str) -> None:
        """A reset of the given cause (module docstring); inside a run it waits for the core to stop."""
        if cause not in RESET_CAUSES:
            raise ValueError(f"unknown reset cause {cause!r}; known: {', '.join(RESET_CAUSES)}")
        if self._core.in_run:
            self._core.request_reset(cause)
            return
        self._system_reset(cause, count=True)

    def power_on(self) -> None:
        """Power-on reset: option bytes loaded, the application (if any) runs."""
        self._system_reset("por", count=True)

    def _system_reset(self, cause: str, count: bool) -> None:
        core = self._core
        if count:
            self.counts[cause] = self.counts.get(cause, 0) + 1
        self._last_reset = (cause, self._clock.now_ps, core.instructions)
        self._watchdog.sync()
        if cause != "vectreset":
            power = cause in POWER_RESETS
            self._flash.system_reset()
            self._rcc.reset(power_on=power)
            if count:
                self._rcc.record_reset(RESET_FLAGS_FOR_CAUSE[cause])
            self._watchdog.iwdg.reset()
            self._crc.reset()
            if power:
                self.power_cycles += 1  # the SW-DP is reset too (debug.DebugPort follows this count)
                core.reset_debug()
                self._scs.reset_debug()
            self._scs.reset_system()
            if self._options.hardware_watchdog:
                self._watchdog.iwdg.hardware_start()  # WDG_SW = 0: the IWDG runs from every reset (RM0090 19.3.2)
        memory = self._memory
        memory.apply_fixups()
        memory.flush_all_code()
        memory.protect_flash(self._flash.reads_blocked)
        core.reset(self._bus.core_read32(0), self._bus.core_read32(4))
        self._run_state_changed()
        if not core.held_in_reset:
            self._leave_reset()

    def _leave_reset(self) -> None:
        """The core leaves reset: a halt requested during reset or VC_CORERESET keeps it halted on the reset
        vector; otherwise the application starts."""
        core = self._core
        if core.halted:
            return
        if core.debugen and core.demcr & DEMCR_VC_CORERESET:
            core.halt(DFSR_VCATCH)
            return
        self._application_runs()

    def _application_runs(self) -> None:
        """What the faulted application does as soon as it runs (faults.py, "what the application does")."""
        faults = self._faults
        if faults.iwdg_timeout_ms is not None:
            prescaler, reload = iwdg_settings_for(faults.iwdg_timeout_ms)
            self._watchdog.sync()
            self._watchdog.iwdg.start(prescaler, reload)
        if faults.sticky_sr:
            self._flash.set_sticky(faults.sticky_sr)
        if faults.cr_locked_by_bad_key:
            try:
                self._flash.write_register(FLASH_KEYR - FLASH_BASE, BAD_FLASH_KEY)
            except BusFault:
                pass  # the application takes the bus error; CR stays locked until the next reset
