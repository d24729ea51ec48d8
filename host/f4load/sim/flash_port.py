"""The FLASH interface on the virtual STM32F407's bus: register accesses and stores, and what waiting for BSY costs.

`FlashPort` stands between the bus and the flash model (`flash.py`): it takes the FLASH register accesses and
the stores into flash of the core and of the debugger, and decides what the core's time does while a flash
operation is in progress (RM0090 3.6: one bank, so an erase or program blocks flash accesses; FLASH_SR stays
readable). It owns the poll-skipping state; the core's time it moves through `CoreTiming`.

Poll skipping: reading FLASH_SR does not stall on silicon, even while BSY=1 (RM0090 3.6 stalls only CR writes
and flash accesses). When the same code reads SR with BSY set a second time (a polling loop; a one-off read,
say for an error report, is left alone), nothing the core can do changes BSY until the operation ends, so the
core's time jumps (inside the run) to the end of the operation or of the budget, and the load completes with
the status at that time: BSY=1 if the jump ended first, so the loop's next instructions (a CYCCNT timeout, an
IWDG refresh) run. One jump is at most 1 ms at first and then 1/16 of the time the core has polled this
operation (since its first skipped poll, or since the core last halted, resumed or reset: `forget_polls`), so
a loop's own timeout fires at most 1/16 late, whatever step the caller advances time by; that holds for a
normal operation (a 10 ms timeout against a 1 s erase fires at 10-11 ms, not at the end of the erase) and for
one whose BSY never clears (`bsy_stuck`). A 1 s erase costs about 80 jumps, a 16 us program write one. While
the IWDG counts, one jump is also at most a quarter of its timeout, so a loop that refreshes it between polls
stays in time.

Stalls: a FLASH_CR write or a flash store while BSY=1 stalls the core until BSY clears (RM0090 3.6): inside
the budget the core's time jumps to the end of the operation, else the run stops and the access runs again
later; with `bsy_stuck` the stall lasts until a reset (or the IWDG). Code fetched from flash stalls the same
way while an operation is in progress (single bank: `code_fetch`). The normal end of a flash operation is
therefore not a run boundary: the core sees it at its next flash access or block.

The debugger's AHB-AP transfer stalls the same way (`_stall_debugger_while_busy`): it completes when the
operation ends, and time passes for the whole chip (`advance`); with BSY stuck the flash model refuses the
access instead. A probe that gives up after `debugger_wait_limit_ps` of WAIT answers gets BusWait.
"""
from __future__ import annotations

from typing import Callable, Optional, Protocol, Tuple

from f4load.part import CCM_START
from f4load.registers import FLASH_BASE, FLASH_CR, FLASH_SR
from f4load.sim.clock import CYCLE_PS, PS_PER_MS, VirtualClock
from f4load.sim.flash import BusFault, BusWait, FlashInterface
from f4load.sim.memory import Memory
from f4load.sim.memory_map import model_address
from f4load.sim.peripherals import WatchdogClock

FLASH_SR_OFFSET = FLASH_SR - FLASH_BASE
FLASH_CR_OFFSET = FLASH_CR - FLASH_BASE
# Poll skipping: the first jumps are at most 1 ms (what one ST-Link command costs, and the stub's timeout
# resolution), later ones at most 1/16 of the time this operation has been polled.
POLL_STEP_PS = 1 * PS_PER_MS
POLL_GROWTH = 16


class CoreTiming(Protocol):
    """What the flash port needs of the core (core.py): where the core's time stands inside a run, and how
    to make it wait or stop."""

    in_run: bool  # inside emu_start (advance or step)
    stepping: bool  # the run is a single step (DHCSR.C_STEP): runs no virtual time
    deadline: int  # the end of the current run's budget
    core_ps: int  # when the core's next instruction executes (may run ahead of the clock)
    block_address: int  # the translated block the core is executing

    def wait_until(self, when: int) -> None:
        """The core's time moves on to `when` as if it had waited (never back)."""

    def stop_run(self, reason: Tuple) -> None:
        """End the run; the access that asked runs again when the core next runs."""


class FlashPort:
    """FLASH registers and stores as the bus sees them; poll skipping and stalls (module docstring)."""

    def __init__(self, clock: VirtualClock, flash: FlashInterface, memory: Memory, core: CoreTiming,
                 watchdog: WatchdogClock, advance: Callable[[int], None]) -> None:
        self._clock = clock
        self._flash = flash
        self._memory = memory
        self._core = core
        self._watchdog = watchdog
        self._advance = advance  # time passing for the whole chip (Chip.advance), for the debugger's stalls
        self.debugger_wait_limit_ps: Optional[int] = None  # DebugPort.wait_limit_ps during a debugger access
        self.poll_skips = 0  # how many times a BSY poll made the core's time jump
        self._poll_since: Optional[int] = None  # when the core started polling the BSY of the current operation
        self._poll_until: Optional[int] = None  # the end of that operation (None: BSY stuck)
        self._bsy_read_block: Optional[int] = None  # the block whose SR read last saw BSY=1

    # --- registers ------------------------------------------------------------------------------------------
    def read_register(self, offset: int, size: int, core: bool = False) -> int:
        """A FLASH register read (never stalls); the core's repeated SR reads while BSY=1 skip time."""
        self._memory.apply_fixups()
        flash = self._flash
        value = flash.read_register(offset, size)
        if core and (offset & ~3) == FLASH_SR_OFFSET:
            # A poll is the same code reading SR with BSY set again; a one-off read (say, to record SR in an
            # error report) is not skipped.
            timing = self._core
            polled_before = self._bsy_read_block == timing.block_address
            self._bsy_read_block = timing.block_address if flash.busy else None
            if polled_before and flash.busy and timing.in_run and not timing.stepping and self._skip_poll():
                value = flash.read_register(offset, size)
        return value

    def write_register(self, offset: int, value: int, size: int, core: bool = False) -> None:
        """A FLASH register write; a CR write while BSY=1 stalls until BSY clears (RM0090 3.6)."""
        self._memory.apply_fixups()
        if (offset & ~3) == FLASH_CR_OFFSET and self._flash.busy:
            if core and self._core.in_run:
                if not self._wait_for_flash_in_run():
                    return  # the store runs again when BSY clears
            elif not core:
                self._stall_debugger_while_busy()
        self._flash.write_register(offset, value, size)

    # --- stores into flash and the system area -----------------------------------------------------------------
    def core_store(self, address: int, size: int, value: int) -> None:
        """A core store into flash or the system area: it waits while BSY=1, then the model rules."""
        if self._flash.busy and self._core.in_run and not self._wait_for_flash_in_run():
            return
        self._flash.write_flash(model_address(address), size, value)
        self._memory.flash_changed = True

    def debugger_store(self, address: int, size: int, value: int) -> None:
        """A debugger store into flash or the system area: the AHB stalls while BSY=1, then the model rules."""
        self._stall_debugger_while_busy()
        self._flash.write_flash(model_address(address), size, value)
        self._memory.flash_changed = True

    def debugger_read(self, address: int) -> None:
        """A debugger read of main flash while BSY=1 stalls until the operation ends (one bank: every flash
        read waits for an erase or program, digest "Rules that matter"); time passes. With BSY stuck the
        transfer never completes: the probe sees a fault."""
        self._stall_debugger_while_busy()
        if self._flash.busy:
            raise BusFault(f"flash read at {address:#010x} stalled: BSY never clears")

    # --- the core's time --------------------------------------------------------------------------------------
    def code_fetch(self, address: int) -> bool:
        """The core is about to run the block at `address` while BSY=1 (its block hook checks the bit): the
        model catches up with the core's time first (an operation may have ended during the previous block);
        code fetched from flash then stalls while the operation goes on (single bank, RM0090 3.5). True if
        the block may run now."""
        clock, timing, flash = self._clock, self._core, self._flash
        clock.now_ps = max(clock.now_ps, min(timing.core_ps, timing.deadline))
        flash.on_time()
        return address >= CCM_START or not flash.busy or self._wait_for_flash_in_run()

    def forget_polls(self) -> None:
        """The core halted, resumed or reset: a BSY poll's duration counts afresh."""
        self._poll_since = None

    def _skip_poll(self) -> bool:
        """The core polls BSY: nothing it does changes BSY, so its time jumps towards the end of the operation:
        to the end, the end of the budget, or one poll step (`_poll_step`: a loop's own timeout fires at most
        1/16 late), whichever comes first, and at most a quarter of the IWDG timeout while the IWDG counts
        (module docstring). The load then completes with the status at that time, so the loop's next
        instructions (its timeout check, an IWDG refresh) run. True if time moved."""
        now = self._clock.now_ps
        until = self._flash.busy_until_ps()
        target = min(self._core.deadline, now + self._poll_step(now, until))
        if until is not None:
            target = min(target, until)
        timeout = self._watchdog.counting_timeout_ps()
        if timeout is not None:
            target = min(target, now + max(timeout // 4, CYCLE_PS))
        if target <= now:
            return False
        self.poll_skips += 1
        self._jump_core_to(target)
        return True

    def _poll_step(self, now: int, until: Optional[int]) -> int:
        """How far one poll may jump: POLL_STEP_PS at first, then 1/16 of the time the core has been polling
        this operation (`until` is its end, None when BSY is stuck; counted since the core last resumed), so
        the loop's own timeout ends the wait at most 1/16 late after O(log) iterations instead of thousands."""
        if self._poll_since is None or self._poll_until != until:
            self._poll_since = now
            self._poll_until = until
        return max(POLL_STEP_PS, (now - self._poll_since) // POLL_GROWTH)

    def _jump_core_to(self, when: int) -> None:
        """Inside a run: the core's time moves to `when` (<= the run's deadline) as if it had waited."""
        self._core.wait_until(when)
        self._clock.now_ps = when
        self._flash.on_time()

    def _wait_for_flash_in_run(self) -> bool:
        """A core access that must wait for BSY=0 (RM0090 3.6): inside the budget the core's time jumps to the
        end of the operation; otherwise the run stops and the access runs again once BSY clears. True if the
        access can proceed now."""
        until = self._flash.busy_until_ps()
        timing = self._core
        if until is not None and until <= timing.deadline and not timing.stepping:
            self._jump_core_to(max(until, self._clock.now_ps))
            if not self._flash.busy:
                return True
        timing.stop_run(("stall",))
        return False

    def _stall_debugger_while_busy(self) -> None:
        """RM0090 3.6: an access that must wait for BSY stalls the bus; the debugger's transfer completes when
        the operation ends (time passes). With BSY stuck the model refuses the access instead. A probe that
        gives up after `debugger_wait_limit_ps` of WAIT answers (DebugPort.wait_limit_ps) gets BusWait for a
        longer stall, and the access does not happen."""
        flash = self._flash
        if flash.busy:
            until = flash.busy_until_ps()
            now = self._clock.now_ps
            limit = self.debugger_wait_limit_ps
            if limit is not None and (until is None or until - now > limit):
                raise BusWait("the flash is busy (BSY=1): the bus stalls the access")
            if until is not None and until > now:
                self._advance(until - now)
