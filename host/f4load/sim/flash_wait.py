"""The virtual STM32F407 waiting for its flash: poll skipping, bus stalls while BSY=1, and what they cost in time.

`ChipFlashWait` holds the `Chip` methods for FLASH register accesses by the core and the debugger and for the
core's time while it waits for a flash operation (RM0090 3.6: one bank, so an erase or program blocks flash
accesses; FLASH_SR stays readable).

Poll skipping: reading FLASH_SR does not stall on silicon, even while BSY=1 (RM0090 3.6 stalls only CR writes
and flash accesses). When the same code reads SR with BSY set a second time (a polling loop; a one-off read,
say for an error report, is left alone), nothing the core can do changes BSY until the operation ends, so the
core's time jumps (inside the run) to the end of the operation or of the budget, and the load completes with
the status at that time: BSY=1 if the jump ended first, so the loop's next instructions (a CYCCNT timeout, an
IWDG refresh) run. One jump is at most 1 ms at first and then 1/16 of the time the core has polled this
operation (since its first skipped poll, or since the core last resumed), so a loop's own timeout fires at
most 1/16 late, whatever step the caller advances time by; that holds for a normal operation (a 10 ms
timeout against a 1 s erase fires at 10-11 ms, not at the end of the erase) and for one whose BSY never
clears (`bsy_stuck`). A 1 s erase costs about 80 jumps, a 16 us program write one. While the IWDG counts,
one jump is also at most a quarter of its timeout, so a loop that refreshes it between polls stays in time.

Stalls: a FLASH_CR write or a flash store while BSY=1 stalls the core until BSY clears (RM0090 3.6): inside
the budget the core's time jumps to the end of the operation, else the run stops and the access runs again
later; with `bsy_stuck` the stall lasts until a reset (or the IWDG). Code fetched from flash stalls the same
way while an operation is in progress (single bank). The normal end of a flash operation is therefore not a
run boundary: the core sees it at its next flash access or block.

The debugger's AHB-AP transfer stalls the same way (`_stall_debugger_while_busy`): it completes when the
operation ends, and time passes; with BSY stuck the flash model refuses the access instead.
"""
from __future__ import annotations

from typing import Optional

from f4load.registers import FLASH_BASE, FLASH_CR, FLASH_SR
from f4load.sim.base import ChipBase
from f4load.sim.clock import PS_PER_MS
from f4load.sim.core import CYCLE_PS
from f4load.sim.flash import BusWait

FLASH_SR_OFFSET = FLASH_SR - FLASH_BASE
FLASH_CR_OFFSET = FLASH_CR - FLASH_BASE
# Poll skipping: the first jumps are at most 1 ms (what one ST-Link command costs, and the stub's timeout
# resolution), later ones at most 1/16 of the time this operation has been polled.
POLL_STEP_PS = 1 * PS_PER_MS
POLL_GROWTH = 16


class ChipFlashWait(ChipBase):
    """FLASH register accesses and the core's time while the flash is busy (see the module docstring)."""

    def _flash_register_read(self, offset: int, size: int, core: bool = False) -> int:
        """A FLASH register read (never stalls); the core's repeated SR reads while BSY=1 skip time."""
        self.memory.apply_fixups()
        value = self.flash.read_register(offset, size)
        if core and (offset & ~3) == FLASH_SR_OFFSET:
            # A poll is the same code reading SR with BSY set again; a one-off read (say, to record SR in an
            # error report) is not skipped.
            polled_before = self._bsy_read_block == self._block_address
            self._bsy_read_block = self._block_address if self.flash.busy else None
            if polled_before and self.flash.busy and self._in_run and not self._stepping and self._skip_poll():
                value = self.flash.read_register(offset, size)
        return value

    def _skip_poll(self) -> bool:
        """The core polls BSY: nothing it does changes BSY, so its time jumps towards the end of the operation:
        to the end, the end of the budget, or one poll step (`_poll_step`: a loop's own timeout fires at most
        1/16 late), whichever comes first, and at most a quarter of the IWDG timeout while the IWDG counts
        (module docstring). The load then completes with the status at that time, so the loop's next
        instructions (its timeout check, an IWDG refresh) run. True if time moved."""
        now = self.clock.now_ps
        until = self.flash.busy_until_ps()
        target = min(self._deadline, now + self._poll_step(now, until))
        if until is not None:
            target = min(target, until)
        if self.iwdg.running and self._iwdg_counting:
            target = min(target, now + max(self.iwdg.timeout_ps // 4, CYCLE_PS))
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
        self._core_ps = max(self._core_ps, when)
        self.clock.now_ps = when
        self.flash.on_time()

    def _flash_register_write(self, offset: int, size: int, value: int, core: bool = False) -> None:
        """A FLASH register write; a CR write while BSY=1 stalls until BSY clears (RM0090 3.6)."""
        self.memory.apply_fixups()
        if (offset & ~3) == FLASH_CR_OFFSET and self.flash.busy:
            if core and self._in_run:
                if not self._wait_for_flash_in_run():
                    return  # the store runs again when BSY clears
            elif not core:
                self._stall_debugger_while_busy()
        self.flash.write_register(offset, value, size)

    def _wait_for_flash_in_run(self) -> bool:
        """A core access that must wait for BSY=0 (RM0090 3.6): inside the budget the core's time jumps to the
        end of the operation; otherwise the run stops and the access runs again once BSY clears. True if the
        access can proceed now."""
        until = self.flash.busy_until_ps()
        if until is not None and until <= self._deadline and not self._stepping:
            self._jump_core_to(max(until, self.clock.now_ps))
            if not self.flash.busy:
                return True
        self._stop_run(("stall",))
        return False

    def _stall_debugger_while_busy(self) -> None:
        """RM0090 3.6: an access that must wait for BSY stalls the bus; the debugger's transfer completes when
        the operation ends (time passes). With BSY stuck the model refuses the access instead. A probe that
        gives up after `debugger_wait_limit_ps` of WAIT answers (DebugPort.wait_limit_ps) gets BusWait for a
        longer stall, and the access does not happen."""
        if self.flash.busy:
            until = self.flash.busy_until_ps()
            limit = self.debugger_wait_limit_ps
            if limit is not None and (until is None or until - self.clock.now_ps > limit):
                raise BusWait("the flash is busy (BSY=1): the bus stalls the access")
            if until is not None and until > self.clock.now_ps:
                self.advance(until - self.clock.now_ps)
