"""The virtual STM32F407's Cortex-M4 core: Unicorn, running for a time budget, idle loops, halting.

`ChipCore` holds the `Chip` methods (chip.py is the façade; the shared state is declared in base.py) that run
the core: the Unicorn instance and its hooks, `advance`/`run_until_halted`, idle-loop detection, the
translation cache, halt/resume/step and the register file.

Unicorn facts this module relies on (measured with unicorn 2.1.4):
- `emu_stop()` in a block hook stops before that block runs; in an MMIO callback or a memory hook it abandons
  the instruction, which runs again (access included) on the next `emu_start`. Bus stalls use that: the
  stalled store simply runs again later.
- BKPT arrives as `UC_HOOK_INTR` 7 with PC on the BKPT; SVC as 2 with PC after it; a branch to an EXC_RETURN
  value as 8 (EXCP_EXCEPTION_EXIT). WFI ends `emu_start` normally with PC after the WFI; WFE and YIELD end it
  with UC_ERR_INSN_INVALID and PC after them; UDF with UC_ERR_INSN_INVALID and PC on it.
- Unicorn keeps translated code after host-side writes: ranges the debugger writes, and flash whose contents
  the model changed, are removed from the translation cache before the core runs again.
(The store-into-flash fact is in bus.py.)

Time (docs/sim.md): `advance(ps)` moves `clock.now_ps` forward by exactly `ps`, handling events (end of a flash
operation, IWDG expiry, a reset the flash model asks for) at their time. While it is not halted, sleeping,
locked up, in reset or stalled, the core runs one instruction per 62.5 ns cycle (16 MHz HSI). Instructions are
counted per translated block (`UC_HOOK_BLOCK`; the count comes from the Thumb-2 encoding, cached per block);
a block starts while any budget is left, so the core may run ahead of the clock by less than one block, and
that debt is paid from the next budget. MMIO callbacks see the time at the start of their block.
`run_until_halted(limit)` advances until the core halts (the clock stops there) or the limit passes.

Poll skipping and stalls on a busy flash (how the core's time jumps while it waits for BSY) are in
flash_wait.py.

Idle loops: a block without stores that branches to itself and comes back with every register unchanged and
no MMIO access repeats until something outside the core changes: the rest of the budget is idle
(`_watch_loop`). Sleep (WFI/WFE) lasts until a halt or a reset: no interrupts are modelled.

Ctrl-C (SIGINT, SIGTERM): Python would raise KeyboardInterrupt in whatever runs when the signal arrives, most
often one of the Unicorn callbacks below, where ctypes swallows it or it leaves the chip half updated. So
`advance` and `step` run with signals deferred (f4load.interrupt): the hooks never see a Python exception from
a signal, and the request is raised when the chip's state is consistent again.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from unicorn import (
    UC_ARCH_ARM,
    UC_ERR_INSN_INVALID,
    UC_HOOK_BLOCK,
    UC_HOOK_CODE,
    UC_HOOK_INTR,
    UC_MODE_MCLASS,
    UC_MODE_THUMB,
    Uc,
    UcError,
)
from unicorn import arm_const as arm

from f4load import interrupt
from f4load.part import CCM_START
from f4load.registers import FLASH_SR_BSY
from f4load.sim.armv7m import (
    GP_REGS,
    HARDFAULT,
    NMI,
    REGSEL_FPSCR,
    REGSEL_MSP,
    REGSEL_PC,
    REGSEL_PSP,
    REGSEL_S0,
    REGSEL_SP,
    REGSEL_SPECIAL,
    REGSEL_XPSR,
    SVCALL,
    XPSR_T,
)
from f4load.sim.base import ChipBase
from f4load.sim.clock import CYCLE_PS
from f4load.sim.debug import (
    CFSR_IACCVIOL,
    CFSR_IBUSERR,
    CFSR_INVSTATE,
    CFSR_PRECISERR,
    CFSR_UNDEFINSTR,
    DFSR_BKPT,
    DFSR_HALTED,
    HFSR_DEBUGEVT,
    PPB_START,
)

# emu_start's "until": an odd address, never equal to a Thumb PC, so only our hooks end a run.
NEVER = 0xFFFF_FFFF
# UC_HOOK_INTR numbers (QEMU's EXCP_*).
INTR_SWI = 2
INTR_BKPT = 7
INTR_EXCEPTION_EXIT = 8
INTR_PREFETCH_ABORT = 3
INTR_DATA_ABORT = 4
CFSR_NOCP = 1 << 19
CFSR_UNALIGNED = 1 << 24
_USAGE_FAULTS = {1: CFSR_UNDEFINSTR, 17: CFSR_NOCP, 18: CFSR_INVSTATE, 22: CFSR_UNALIGNED}
# Thumb hint instructions that end a Unicorn run.
WFI = 0xBF30
WFE = 0xBF20
YIELD = 0xBF10
_LOOP_REGS = GP_REGS + [arm.UC_ARM_REG_XPSR]


def scan_block(code: bytes) -> Tuple[int, bool]:
    """(instructions, may store) of a straight run of Thumb-2 code.

    A halfword whose top five bits are 0b11101, 0b11110 or 0b11111 starts a 32-bit instruction (ARMv7-M
    A5.1). "May store" is conservative: 16-bit STR/STRH/STRB (immediate, register, SP-relative), PUSH, STM;
    32-bit load/store multiple/dual/exclusive, single stores and coprocessor stores with L=0 (A5.3).
    """
    count = i = 0
    stores = False
    n = len(code) - 1
    while i < n:
        hw = code[i] | code[i + 1] << 8
        if hw >> 11 >= 0b11101:
            if ((hw & 0xFE00) in (0xE800, 0xF800) or (hw & 0xEE00) == 0xEC00) and not hw & 0x10:
                stores = True
            i += 4
        else:
            top5, top7 = hw >> 11, hw >> 9
            if top5 in (0b01100, 0b01110, 0b10000, 0b10010, 0b11000) or top7 in (0b0101000, 0b0101001,
                                                                                0b0101010, 0b1011010):
                stores = True
            i += 2
        count += 1
    return max(count, 1), stores


def new_cortex_m4() -> Uc:
    """A Unicorn Cortex-M4 with an empty address space (memory.py maps storage, bus.py the peripherals)."""
    uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
    uc.ctl_set_cpu_model(arm.UC_CPU_ARM_CORTEX_M4)
    return uc


class ChipCore(ChipBase):
    """The core's part of `Chip` (see the module docstring)."""

    def _build_unicorn(self) -> None:
        uc = self.uc
        uc.hook_add(UC_HOOK_BLOCK, self._on_block)
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)

    # ==========================================================================================================
    # Running for a time budget
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
        target = self.clock.now_ps + ps
        while True:
            self._process_events()
            now = self.clock.now_ps
            if now >= target or (self.halted and self._halt_stops_advance):
                break
            end = target
            runs = self._core_can_run()
            event = self._next_event_ps(runs)
            if event is not None and event < end:
                end = event
            if runs:
                self._run_until(end)
            else:
                self.clock.now_ps = end

    def run_until_halted(self, limit_ps: int) -> bool:
        """Advance until the core halts or `limit_ps` has passed, whichever is first (the clock stops at the
        halt, give or take the rest of the block). True if the core is halted. For hosts with no link cost."""
        end = self.clock.now_ps + limit_ps
        while not self.halted and self.clock.now_ps < end:
            self._halt_stops_advance = True
            try:
                self.advance(end - self.clock.now_ps)
            finally:
                self._halt_stops_advance = False
        return self.halted

    _halt_stops_advance = False

    def _core_can_run(self) -> bool:
        if self.halted or self.lockup or self.sleeping or self._nrst:
            return False
        if self._wait_flash:
            if self.flash.busy:
                return False
            self._wait_flash = False
        if self._idle_until is not None:
            if self.clock.now_ps < self._idle_until:
                return False
            self._idle_until = None
        return True

    def _next_event_ps(self, core_runs: bool) -> Optional[int]:
        """The next time something must happen outside the core. The normal end of a flash operation is not
        an event while the core runs: the core sees it when it next touches the flash (each access brings the
        model up to time), so a program loop needs no restart per word. A cut (reset_during) always is."""
        flash_next = self.flash.next_event_ps()
        if core_runs and flash_next is not None and flash_next == self.flash.busy_until_ps():
            flash_next = None
        times = [flash_next, self.watchdog.expiry_ps(), self._idle_until]
        if self._wait_flash:
            times.append(self.flash.busy_until_ps())
        present = [t for t in times if t is not None and t > self.clock.now_ps]
        return min(present) if present else None

    def _process_events(self) -> None:
        self.watchdog.sync()
        self.flash.on_time()
        if self.iwdg.expired:
            self.reset("iwdg")

    def _run_until(self, end: int) -> None:
        now = self.clock.now_ps
        if self.core_ps < now:
            self.core_ps = now  # a core that waited starts now; one that ran ahead keeps its debt
        if self.core_ps >= end:
            self.clock.now_ps = end
            return
        if not self._prepare_run():
            return
        self.deadline = end
        self._loop_address = -1
        self._run_emulation(count=0)
        if self._stop is not None and self._stop[0] == "budget" or self._stop is None and self.core_ps >= end:
            self.clock.now_ps = end
        else:
            self.clock.now_ps = max(now, min(self.core_ps, end))
        self._finish_run()

    def _prepare_run(self) -> bool:
        """Flush stale code and check the state the core would start in; False if it faulted instead."""
        self.memory.flush_stale_code()
        self.memory.protect_flash(self.flash.reads_blocked)
        if not self._thumb:
            self._take_fault(CFSR_INVSTATE)  # EPSR.T = 0: the first instruction takes a UsageFault
            return False
        return True

    def _run_emulation(self, count: int) -> None:
        uc = self.uc
        self._stop = None
        self.in_run = True
        pc = uc.reg_read(arm.UC_ARM_REG_PC)
        try:
            uc.emu_start(pc | 1, NEVER, 0, count)
        except UcError as error:
            if self._stop is None:
                self._stop = self._classify_error(error)
        finally:
            self.in_run = False
            self.memory.apply_fixups()

    def _classify_error(self, error: UcError) -> Tuple:
        pc = self.uc.reg_read(arm.UC_ARM_REG_PC)
        if error.errno == UC_ERR_INSN_INVALID:
            previous = self._halfword(pc - 2)
            if previous == WFE:
                return ("sleep",)
            if previous == YIELD:
                return ("continue",)
            return ("fault", CFSR_UNDEFINSTR, None)
        return ("fault", CFSR_IBUSERR, None)

    def _finish_run(self) -> None:
        """Act on why the run stopped (the clock already says when)."""
        reason = self._stop
        self._stop = None
        if self._pending_reset is not None:
            cause, self._pending_reset = self._pending_reset, None
            self.reset(cause)
            return
        if reason is None:
            if not self.stepping and self._halfword(self.uc.reg_read(arm.UC_ARM_REG_PC) - 2) == WFI:
                self._enter_sleep()
            return
        kind = reason[0]
        if kind == "bkpt":
            if self.debugen:
                self.halt(DFSR_BKPT)
            else:
                self._take_fault(0, hfsr=HFSR_DEBUGEVT)  # BKPT without a debugger escalates (ARMv7-M C1.4)
        elif kind == "fpb":
            self.halt(DFSR_BKPT)
        elif kind == "fault":
            self._take_fault(reason[1], reason[2])
        elif kind == "svc":
            self._enter_exception(SVCALL, self.uc.reg_read(arm.UC_ARM_REG_PC))
        elif kind == "exception_return":
            self._exception_return()
        elif kind == "idle":
            self._idle_until = reason[1]
        elif kind == "stall":
            self._wait_flash = True
        elif kind == "sleep":
            self._enter_sleep()

    def _enter_sleep(self) -> None:
        self.sleeping = True

    def abort_access(self, reason: Tuple) -> None:
        self._stop = reason

    def priority_below_zero(self) -> bool:
        """Execution priority -1 or -2: FAULTMASK set, or the HardFault or NMI handler active (B1.5.4)."""
        return bool(self.uc.reg_read(arm.UC_ARM_REG_FAULTMASK) & 1) or self.active_exception in (NMI, HARDFAULT)

    def _halfword(self, address: int) -> Optional[int]:
        try:
            return int.from_bytes(self.uc.mem_read(address, 2), "little")
        except UcError:
            return None

    def wait_until(self, when: int) -> None:
        self.core_ps = max(self.core_ps, when)

    def stop_run(self, reason: Tuple) -> None:
        if self._stop is None:
            self._stop = reason
        self.uc.emu_stop()

    # ==========================================================================================================
    # Hooks: instruction counting, idle loops, interrupts, FPB breakpoints
    def _on_block(self, uc: Uc, address: int, size: int, _: object) -> None:
        if self._fixups:
            self.memory.apply_fixups()
        # (FLASH_SR's attribute, not the property: this runs for every block)
        if self.flash.sr & FLASH_SR_BSY and not self.flash_port.code_fetch(address):
            return  # code fetches from flash stall while it erases or programs (single bank, RM0090 3.5)
        self.block_address = address
        if address < CCM_START:
            self.memory.flash_code_cached = True
        scanned = self._block_sizes.get((address, size))
        if scanned is None:
            scanned = scan_block(bytes(uc.mem_read(address, size)))
            self._block_sizes[(address, size)] = scanned
        n = scanned[0]
        if self.stepping:
            self.instructions += 1
            self.retired = True
            return
        if self.core_ps >= self.deadline:
            self.stop_run(("budget",))
            return
        self.clock.now_ps = self.core_ps
        self.core_ps += n * CYCLE_PS
        self.instructions += n
        self.retired = True
        if address == self._loop_address:
            if not scanned[1]:
                self._watch_loop(uc)
        else:
            self._loop_address = address
            self._loop_count = 0

    _loop_address = -1

    _loop_count = 0

    _loop_snapshot: Optional[List[int]] = None

    loop_io = False

    def _watch_loop(self, uc: Uc) -> None:
        """Idle-loop detection: a block without stores that branches to itself and comes back twice with every
        register and flag unchanged, without an MMIO access, repeats forever until something outside the core
        changes; the rest of the budget is idle. (A loop polling RAM that the debugger writes stays correct:
        the debugger writes only between runs.) After a mismatch the loop is left alone for a while, so a
        counting loop pays for a register snapshot only once every 64 iterations."""
        self._loop_count += 1
        if self._loop_count < 4:
            return
        if self._loop_count == 4:
            self._loop_snapshot = [uc.reg_read(r) for r in _LOOP_REGS]
            self.loop_io = False
            return
        snapshot = [uc.reg_read(r) for r in _LOOP_REGS]
        if self.loop_io or snapshot != self._loop_snapshot:
            self._loop_count = -60
            return
        if self._loop_count >= 6:
            self.idle_loops += 1
            self.stop_run(("idle", self.deadline))

    def _on_interrupt(self, uc: Uc, intno: int, _: object) -> None:
        if intno == INTR_BKPT:
            self.stop_run(("bkpt",))
        elif intno == INTR_EXCEPTION_EXIT:
            self.stop_run(("exception_return",))
        elif intno == INTR_SWI:
            self.stop_run(("svc",))
        elif intno == INTR_PREFETCH_ABORT:
            pc = uc.reg_read(arm.UC_ARM_REG_PC)
            self.stop_run(("fault", CFSR_IACCVIOL if pc >= PPB_START else CFSR_IBUSERR, None))
        elif intno == INTR_DATA_ABORT:
            self.stop_run(("fault", CFSR_PRECISERR, None))
        else:
            self.stop_run(("fault", _USAGE_FAULTS.get(intno, CFSR_UNDEFINSTR), None))

    def _on_breakpoint(self, uc: Uc, address: int, size: int, _: object) -> None:
        if address == self._resume_pc:
            self._resume_pc = None
            return
        if address in self.scs.breakpoint_addresses():
            self.stop_run(("fpb",))

    def breakpoints_changed(self) -> None:
        """FPB comparators or FP_CTRL changed: hook exactly the enabled addresses (a ranged UC_HOOK_CODE costs
        nothing elsewhere)."""
        uc = getattr(self, "uc", None)
        scs = getattr(self, "scs", None)
        if uc is None or scs is None:
            return
        wanted = set(scs.breakpoint_addresses())
        for address in list(self._bp_hooks):
            if address not in wanted:
                uc.hook_del(self._bp_hooks.pop(address))
        for address in wanted:
            if address not in self._bp_hooks:
                self._bp_hooks[address] = uc.hook_add(UC_HOOK_CODE, self._on_breakpoint, None, address, address)
        self.memory.flush_all_code()

    # ==========================================================================================================
    # Halting, stepping and the register file (debug)
    def halt(self, dfsr_bits: int) -> None:
        """Enter Debug state (the DFSR bits say why). Ends sleep, lockup, idling and stalls; the instruction
        that was waiting runs again after `resume`."""
        self.dfsr |= dfsr_bits
        if self.halted:
            return
        if self.lockup:
            self.lockup = False  # entering Debug state leaves Lockup (ARMv7-M B1.5.15); PC stays 0xFFFF_FFFE
        self.halted = True
        self.sleeping = False
        self._idle_until = None
        self._wait_flash = False
        self.flash_port.forget_polls()
        self._run_state_changed()

    def resume(self) -> None:
        if not self.halted:
            return
        self.halted = False
        self._resume_pc = self.uc.reg_read(arm.UC_ARM_REG_PC)
        self.core_ps = self.clock.now_ps
        self.flash_port.forget_polls()
        self._run_state_changed()

    def step(self) -> None:
        """Execute one instruction and halt again (DHCSR.C_STEP). Runs no virtual time."""
        if not self.halted:
            return
        with interrupt.deferred(raise_on_exit=True):
            self._step()

    def _step(self) -> None:
        self.stepping = True
        try:
            if self._prepare_run():
                self._resume_pc = self.uc.reg_read(arm.UC_ARM_REG_PC)
                self._run_emulation(count=1)
                self._finish_run()
        finally:
            self.stepping = False
        self._idle_until = None
        self._wait_flash = False
        self.sleeping = False
        if not self.lockup:
            self.halted = True
        self.dfsr |= DFSR_HALTED

    def read_core_register(self, regsel: int) -> int:
        """A register by DCRSR REGSEL number (ARMv7-M C1.6.3); unknown numbers read 0."""
        uc = self.uc
        if 0 <= regsel <= 14:
            return uc.reg_read(GP_REGS[regsel]) & 0xFFFF_FFFF
        if regsel == REGSEL_PC:
            return uc.reg_read(arm.UC_ARM_REG_PC) & 0xFFFF_FFFF
        if regsel == REGSEL_XPSR:
            xpsr = uc.reg_read(arm.UC_ARM_REG_XPSR) & ~XPSR_T & 0xFFFF_FFFF
            return xpsr | (XPSR_T if self._thumb else 0)
        if regsel == REGSEL_MSP:
            return uc.reg_read(arm.UC_ARM_REG_MSP) & 0xFFFF_FFFF
        if regsel == REGSEL_PSP:
            return uc.reg_read(arm.UC_ARM_REG_PSP) & 0xFFFF_FFFF
        if regsel == REGSEL_SPECIAL:
            return ((uc.reg_read(arm.UC_ARM_REG_CONTROL) & 0x7) << 24
                    | (uc.reg_read(arm.UC_ARM_REG_FAULTMASK) & 1) << 16
                    | (uc.reg_read(arm.UC_ARM_REG_BASEPRI) & 0xFF) << 8
                    | (uc.reg_read(arm.UC_ARM_REG_PRIMASK) & 1))
        if regsel == REGSEL_FPSCR:
            return uc.reg_read(arm.UC_ARM_REG_FPSCR) & 0xFFFF_FFFF
        if REGSEL_S0 <= regsel < REGSEL_S0 + 32:
            return uc.reg_read(arm.UC_ARM_REG_S0 + regsel - REGSEL_S0) & 0xFFFF_FFFF
        return 0

    def write_core_register(self, regsel: int, value: int) -> None:
        uc = self.uc
        value &= 0xFFFF_FFFF
        if 0 <= regsel <= 14:
            uc.reg_write(GP_REGS[regsel], value & ~3 if regsel == REGSEL_SP else value)
        elif regsel == REGSEL_PC:
            uc.reg_write(arm.UC_ARM_REG_PC, value & ~1)
        elif regsel == REGSEL_XPSR:
            self._thumb = bool(value & XPSR_T)
            uc.reg_write(arm.UC_ARM_REG_XPSR, value | XPSR_T)
            self.active_exception = value & 0x1FF
        elif regsel == REGSEL_MSP:
            uc.reg_write(arm.UC_ARM_REG_MSP, value & ~3)
        elif regsel == REGSEL_PSP:
            uc.reg_write(arm.UC_ARM_REG_PSP, value & ~3)
        elif regsel == REGSEL_SPECIAL:
            uc.reg_write(arm.UC_ARM_REG_PRIMASK, value & 1)
            uc.reg_write(arm.UC_ARM_REG_BASEPRI, (value >> 8) & 0xFF)
            uc.reg_write(arm.UC_ARM_REG_FAULTMASK, (value >> 16) & 1)
            uc.reg_write(arm.UC_ARM_REG_CONTROL, (value >> 24) & 0x7)
        elif regsel == REGSEL_FPSCR:
            uc.reg_write(arm.UC_ARM_REG_FPSCR, value)
        elif REGSEL_S0 <= regsel < REGSEL_S0 + 32:
            uc.reg_write(arm.UC_ARM_REG_S0 + regsel - REGSEL_S0, value)
