"""The state the parts of the virtual chip share, and the bookkeeping they all use.

`Chip` (chip.py) is assembled from parts that each read in one sitting: `ChipCore` (core.py), `ChipBus`
(bus.py), `ChipFlashWait` (flash_wait.py) and `ChipExceptions` (exceptions.py). They all derive from
`ChipBase`, which declares every attribute `Chip.__init__` sets (the one list of the chip's state) and, for
the type checker only, the methods one part calls in another. It also keeps the IWDG and CYCCNT in step with
the run state (halted, running, in reset).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from unicorn import Uc

from f4load.part import Part
from f4load.sim.bus import Bus
from f4load.sim.clock import VirtualClock
from f4load.sim.debug import HFSR_FORCED, SystemControlSpace
from f4load.sim.faults import Faults
from f4load.sim.flash import FlashInterface, OptionBytes
from f4load.sim.flash_port import FlashPort
from f4load.sim.memory import Memory
from f4load.sim.peripherals import CrcUnit, Iwdg, Rcc, WatchdogClock


class ChipBase:
    """Shared state of `Chip` (set in `Chip.__init__`), and IWDG/CYCCNT bookkeeping."""

    # --- identity and models --------------------------------------------------------------------------
    faults: Faults
    clock: VirtualClock
    part: Part
    options: OptionBytes
    unique_id: bytes
    flash: FlashInterface
    rcc: Rcc
    iwdg: Iwdg
    crc: CrcUnit
    uc: Uc
    scs: SystemControlSpace
    on_flash_operation: Optional[Callable[[str, str], None]]  # for tools: (kind, phase)

    # --- core and debug state (docs/sim.md) -----------------------------------------------------------
    halted: bool
    lockup: bool
    sleeping: bool
    dfsr: int
    demcr: int
    debugen: bool
    reset_seen: bool  # DHCSR.S_RESET_ST
    retired: bool  # DHCSR.S_RETIRE_ST
    _nrst: bool
    active_exception: int  # IPSR
    _exception_stack: List[int]
    _thumb: bool  # EPSR.T
    core_ps: int  # when the core's next instruction executes (may run ahead of the clock)
    _idle_until: Optional[int]  # idle loop: the core waits until then
    _wait_flash: bool  # stalled on a flash access while BSY=1
    block_address: int  # the translated block the core is executing
    loop_io: bool  # an MMIO access happened since the idle-loop snapshot
    bus: Bus
    in_run: bool
    stepping: bool
    deadline: int
    _stop: Optional[Tuple]  # why the current run stopped (set by hooks)
    _pending_reset: Optional[str]
    _last_reset: Optional[Tuple[str, int, int]]
    _resume_pc: Optional[int]  # an FPB breakpoint here is skipped once after a resume
    watchdog: WatchdogClock
    flash_port: FlashPort
    # counters for tests and tools
    instructions: int
    resets: Dict[str, int]
    power_cycles: int  # power-level resets (POR/BOR): the debug domain (SW-DP) lost power too
    idle_loops: int

    # --- memory ---------------------------------------------------------------------------------------
    memory: Memory
    _fixups: List[Tuple[int, bytes]]  # memory.fixups
    _block_sizes: Dict[Tuple[int, int], Tuple[int, bool]]  # memory.block_sizes
    _bp_hooks: Dict[int, int]
    _periph_read: Dict[int, Callable[[int, int], int]]
    _periph_write: Dict[int, Callable[[int, int, int], None]]

    # --- IWDG and CYCCNT follow the run state ----------------------------------------------------------
    def _iwdg_should_count(self) -> bool:
        """The IWDG stops while the core is halted and DBGMCU_APB1_FZ.DBG_IWDG_STOP is set (RM0090 38.16.4),
        and while NRST holds the chip in reset."""
        if self._nrst:
            return False
        return not (self.halted and self.scs.iwdg_frozen_when_halted)

    def before_freeze_change(self) -> None:
        """Called by the SCS before DBGMCU_APB1_FZ changes."""
        self.watchdog.sync()

    def after_freeze_change(self) -> None:
        """Called by the SCS after DBGMCU_APB1_FZ changed."""
        self.watchdog.counting = self._iwdg_should_count()

    def _run_state_changed(self) -> None:
        """Halted/running/reset changed: settle the IWDG and CYCCNT with the old state, then switch."""
        self.watchdog.set_counting(self._iwdg_should_count())
        self.scs.sync_cycle_counter()

    # --- what one part calls in another (declarations for the type checker) ----------------------------
    if TYPE_CHECKING:
        # core.py
        def advance(self, ps: int) -> None: ...
        def halt(self, dfsr_bits: int) -> None: ...
        def read_core_register(self, regsel: int) -> int: ...
        def stop_run(self, reason: Tuple) -> None: ...
        # bus.py
        # exceptions.py
        def reset(self, cause: str) -> None: ...
        def _take_fault(self, cfsr: int, bfar: Optional[int] = None, hfsr: int = HFSR_FORCED) -> None: ...
        def _enter_exception(self, number: int, return_pc: int) -> None: ...
        def _exception_return(self) -> None: ...
        def priority_below_zero(self) -> bool: ...
