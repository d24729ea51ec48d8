"""The virtual STM32F407's Cortex-M4 core: Unicorn, running for a slice of time, idle loops, halting, registers.

`Core` owns the Unicorn CPU (`new_cortex_m4` makes it; `memory.py` and `bus.py` map the address space onto
it), the block and interrupt hooks, the core's run and debug state (halted, locked up, sleeping, held in reset;
DHCSR.C_DEBUGEN, DEMCR, DFSR, S_RESET_ST, S_RETIRE_ST), the register file with IPSR and the nest of active
exceptions, and the FPB breakpoint hooks. It runs when the chip gives it a slice of time (`run_until`, from
`Chip.advance`) or a single step. What it does not settle itself it hands on: faults, SVC and exception returns
to the exception model (`exceptions.py`), a reset requested while it runs to the reset controller
(`resets.py`), code fetches while the flash is busy to the flash port (`flash_port.py`), and every change of
its run state to the chip (`run_state_changed`: the IWDG and CYCCNT follow it).

Unicorn facts this module relies on (measured with unicorn 2.1.4):
- `emu_stop()` in a block hook stops before that block runs; in an MMIO callback or a memory hook it abandons
  the instruction, which runs again (access included) on the next `emu_start`. Bus stalls use that: the
  stalled store simply runs again later.
- BKPT arrives as `UC_HOOK_INTR` 7 with PC on the BKPT; SVC as 2 with PC after it; a branch to an EXC_RETURN
  value as 8 (EXCP_EXCEPTION_EXIT). WFI ends `emu_start` normally with PC after the WFI; WFE and YIELD end it
  with UC_ERR_INSN_INVALID and PC after them; UDF with UC_ERR_INSN_INVALID and PC on it.
- Unicorn keeps translated code after host-side writes (memory.py removes it before the core runs again).

Time (docs/sim.md): while it is not halted, sleeping, locked up, held in reset or stalled, the core runs one
instruction per 62.5 ns cycle (16 MHz HSI). Instructions are counted per translated block (`UC_HOOK_BLOCK`; the
count comes from the Thumb-2 encoding, cached per block in `Memory.block_sizes`); a block starts while any
budget is left, so the core may run ahead of the clock by less than one block (`core_ps`), and that debt is
paid from the next slice. MMIO callbacks see the time at the start of their block. How the core's time jumps
while it waits for a busy flash is flash_port.py's (through `wait_until` and `stop_run`).

Idle loops: a block without stores that branches to itself and comes back with every register unchanged and
no MMIO access (`loop_io`, set by the bus) repeats until something outside the core changes: the rest of the
slice is idle (`_watch_loop`). Sleep (WFI/WFE) lasts until a halt or a reset: no interrupts are modelled.

Ctrl-C (SIGINT, SIGTERM): Python would raise KeyboardInterrupt in whatever runs when the signal arrives, most
often one of the Unicorn callbacks, where ctypes swallows it or it leaves the chip half updated. So
`Chip.advance` and `step` run with signals deferred (f4load.interrupt): the hooks never see a Python exception
from a signal, and the request is raised when the chip's state is consistent again.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Protocol, Tuple

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
    LOCKUP_PC,
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
from f4load.sim.clock import CYCLE_PS, VirtualClock
from f4load.sim.debug import (
    CFSR_IACCVIOL,
    CFSR_IBUSERR,
    CFSR_INVSTATE,
    CFSR_PRECISERR,
    CFSR_UNDEFINSTR,
    DFSR_BKPT,
    DFSR_HALTED,
    HFSR_DEBUGEVT,
    HFSR_FORCED,
    PPB_START,
)
from f4load.sim.flash import FlashInterface
from f4load.sim.flash_port import FlashPort
from f4load.sim.memory import Memory

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


class ExceptionEntry(Protocol):
    """What the core hands to the exception model (exceptions.py) when an instruction ends in an exception."""

    def take_fault(self, cfsr: int, bfar: Optional[int] = None, hfsr: int = HFSR_FORCED) -> None:
        """A fault with these CFSR/HFSR bits (and BFAR): HardFault, or lockup."""

    def enter_exception(self, number: int, return_pc: int) -> None:
        """Exception entry (SVCall), returning to `return_pc`."""

    def exception_return(self) -> None:
        """A branch to an EXC_RETURN value."""


class Core:
    """The Cortex-M4 (module docstring): built on `uc` with the chip's memory and flash model; `connect`
    gives it the parts built after it that it hands things on to."""

    _exceptions: ExceptionEntry
    _flash_port: FlashPort
    _reset: Callable[[str], None]  # the reset controller's reset(cause)

    def __init__(self, uc: Uc, clock: VirtualClock, memory: Memory, flash: FlashInterface,
                 run_state_changed: Callable[[], None]) -> None:
        self.uc = uc
        self._clock = clock
        self._memory = memory
        self._fixups = memory.fixups  # the same list: checked for every block
        self._block_sizes = memory.block_sizes
        self._flash = flash
        self._run_state_changed = run_state_changed
        # --- run and debug state (docs/sim.md) ------------------------------------------------------------
        self.halted = False
        self.lockup = False
        self.sleeping = False
        self.held_in_reset = False  # NRST is low: no instruction runs (resets.py)
        self.debugen = False  # DHCSR.C_DEBUGEN
        self.demcr = 0
        self.dfsr = 0
        self.reset_seen = False  # DHCSR.S_RESET_ST
        self.retired = False  # DHCSR.S_RETIRE_ST
        # --- registers beside Unicorn's -------------------------------------------------------------------
        self.thumb = True  # EPSR.T
        self.active_exception = 0  # IPSR
        self.exception_stack: List[int] = []  # the exceptions the active one preempted (exceptions.py)
        # --- a run ------------------------------------------------------------------------------------------
        self.core_ps = 0  # when the core's next instruction executes (may run ahead of the clock)
        self.deadline = 0  # the end of the current slice
        self.in_run = False  # inside emu_start
        self.stepping = False  # the run is one DHCSR.C_STEP
        self.block_address = -1  # the translated block the core is executing
        self.loop_io = False  # an MMIO access happened since the idle-loop snapshot (set by the bus)
        self._idle_until: Optional[int] = None  # idle loop: the core waits until then
        self._wait_flash = False  # stalled on a flash access while BSY=1
        self._stop: Optional[Tuple] = None  # why the current run stopped (set by hooks)
        self._pending_reset: Optional[str] = None  # a reset asked for inside the run
        self._resume_pc: Optional[int] = None  # an FPB breakpoint here is skipped once after a resume
        self._loop_address = -1
        self._loop_count = 0
        self._loop_snapshot: Optional[List[int]] = None
        self._breakpoints: Tuple[int, ...] = ()
        self._bp_hooks: Dict[int, int] = {}
        # --- counters for tests and tools -----------------------------------------------------------------
        self.instructions = 0
        self.idle_loops = 0
        uc.hook_add(UC_HOOK_BLOCK, self._on_block)
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)

    def connect(self, exceptions: ExceptionEntry, flash_port: FlashPort, reset: Callable[[str], None]) -> None:
        """The parts built after the core (they need it) that the core hands things on to."""
        self._exceptions = exceptions
        self._flash_port = flash_port
        self._reset = reset

    # ==========================================================================================================
    # Running for a slice of time (Chip.advance decides the slices)
    def can_run(self) -> bool:
        """Whether the core executes now: not halted, locked up, asleep, held in reset, still stalled on a busy
        flash or idling."""
        if self.halted or self.lockup or self.sleeping or self.held_in_reset:
            return False
        if self._wait_flash:
            if self._flash.busy:
                return False
            self._wait_flash = False
        if self._idle_until is not None:
            if self._clock.now_ps < self._idle_until:
                return False
            self._idle_until = None
        return True

    def wake_times(self) -> Tuple[Optional[int], Optional[int]]:
        """When a waiting core can run again: the end of its idling, the end of the flash operation it is
        stalled on (None where it does not wait)."""
        return self._idle_until, self._flash.busy_until_ps() if self._wait_flash else None

    def run_until(self, end: int) -> None:
        """Run until `end` (`can_run` said yes): the clock stops at `end`, or where the run stopped early
        (a halt, a fault, a stall, a reset)."""
        clock = self._clock
        now = clock.now_ps
        if self.core_ps < now:
            self.core_ps = now  # a core that waited starts now; one that ran ahead keeps its debt
        if self.core_ps >= end:
            clock.now_ps = end
            return
        if not self._prepare_run():
            return
        self.deadline = end
        self._loop_address = -1
        self._run_emulation(count=0)
        if self._stop is not None and self._stop[0] == "budget" or self._stop is None and self.core_ps >= end:
            clock.now_ps = end
        else:
            clock.now_ps = max(now, min(self.core_ps, end))
        self._finish_run()

    def _prepare_run(self) -> bool:
        """Flush stale code and check the state the core would start in; False if it faulted instead."""
        self._memory.flush_stale_code()
        self._memory.protect_flash(self._flash.reads_blocked)
        if not self.thumb:
            self._exceptions.take_fault(CFSR_INVSTATE)  # EPSR.T = 0: the first instruction takes a UsageFault
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
            self._memory.apply_fixups()

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
            self._reset(cause)
            return
        if reason is None:
            if not self.stepping and self._halfword(self.uc.reg_read(arm.UC_ARM_REG_PC) - 2) == WFI:
                self.sleeping = True
            return
        kind = reason[0]
        if kind == "bkpt":
            if self.debugen:
                self.halt(DFSR_BKPT)
            else:
                self._exceptions.take_fault(0, hfsr=HFSR_DEBUGEVT)  # BKPT without a debugger escalates (C1.4)
        elif kind == "fpb":
            self.halt(DFSR_BKPT)
        elif kind == "fault":
            self._exceptions.take_fault(reason[1], reason[2])
        elif kind == "svc":
            self._exceptions.enter_exception(SVCALL, self.uc.reg_read(arm.UC_ARM_REG_PC))
        elif kind == "exception_return":
            self._exceptions.exception_return()
        elif kind == "idle":
            self._idle_until = reason[1]
        elif kind == "stall":
            self._wait_flash = True
        elif kind == "sleep":
            self.sleeping = True

    def _halfword(self, address: int) -> Optional[int]:
        try:
            return int.from_bytes(self.uc.mem_read(address, 2), "little")
        except UcError:
            return None

    # --- what the bus and the flash port do to a run (bus.CoreSide, flash_port.CoreTiming) ---------------------
    def stop_run(self, reason: Tuple) -> None:
        """End the run: the first reason given is the one acted on."""
        if self._stop is None:
            self._stop = reason
        self.uc.emu_stop()

    def abort_access(self, reason: Tuple) -> None:
        """The access in progress fails (a memory hook returns False): Unicorn ends the run with an error,
        and this is why."""
        self._stop = reason

    def wait_until(self, when: int) -> None:
        """The core's time moves on to `when` as if it had waited (never back)."""
        self.core_ps = max(self.core_ps, when)

    def request_reset(self, cause: str) -> None:
        """A reset asked for by the core (AIRCR), the flash model (reset_during) or the debugger: at once when
        the core is not running, else as soon as the current instruction is abandoned."""
        if self.in_run:
            self._pending_reset = cause
            self.uc.emu_stop()
        else:
            self._reset(cause)

    def priority_below_zero(self) -> bool:
        """Execution priority -1 or -2: FAULTMASK set, or the HardFault or NMI handler active (B1.5.4)."""
        return bool(self.uc.reg_read(arm.UC_ARM_REG_FAULTMASK) & 1) or self.active_exception in (NMI, HARDFAULT)

    # ==========================================================================================================
    # Hooks: instruction counting, idle loops, interrupts, FPB breakpoints
    def _on_block(self, uc: Uc, address: int, size: int, _: object) -> None:
        if self._fixups:
            self._memory.apply_fixups()
        # (FLASH_SR's attribute, not the property: this runs for every block)
        if self._flash.sr & FLASH_SR_BSY and not self._flash_port.code_fetch(address):
            return  # code fetches from flash stall while it erases or programs (single bank, RM0090 3.5)
        self.block_address = address
        if address < CCM_START:
            self._memory.flash_code_cached = True
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
        self._clock.now_ps = self.core_ps
        self.core_ps += n * CYCLE_PS
        self.instructions += n
        self.retired = True
        if address == self._loop_address:
            if not scanned[1]:
                self._watch_loop(uc)
        else:
            self._loop_address = address
            self._loop_count = 0

    def _watch_loop(self, uc: Uc) -> None:
        """Idle-loop detection: a block without stores that branches to itself and comes back twice with every
        register and flag unchanged, without an MMIO access, repeats forever until something outside the core
        changes; the rest of the slice is idle. (A loop polling RAM that the debugger writes stays correct:
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
        if address in self._breakpoints:
            self.stop_run(("fpb",))

    def set_breakpoints(self, addresses: Tuple[int, ...]) -> None:
        """The FPB's enabled code comparators (debug.py) changed: hook exactly these addresses (a ranged
        UC_HOOK_CODE costs nothing elsewhere)."""
        self._breakpoints = addresses
        wanted = set(addresses)
        uc = self.uc
        for address in list(self._bp_hooks):
            if address not in wanted:
                uc.hook_del(self._bp_hooks.pop(address))
        for address in wanted:
            if address not in self._bp_hooks:
                self._bp_hooks[address] = uc.hook_add(UC_HOOK_CODE, self._on_breakpoint, None, address, address)
        self._memory.flush_all_code()

    # ==========================================================================================================
    # Halting, stepping, resets and the register file (debug)
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
        self._flash_port.forget_polls()
        self._run_state_changed()

    def resume(self) -> None:
        if not self.halted:
            return
        self.halted = False
        self._resume_pc = self.uc.reg_read(arm.UC_ARM_REG_PC)
        self.core_ps = self._clock.now_ps
        self._flash_port.forget_polls()
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

    def lock_up(self) -> None:
        """Lockup (ARMv7-M B1.5.15): the core stops fetching, PC 0xFFFF_FFFE, until a reset or a halt."""
        self.lockup = True
        self.uc.reg_write(arm.UC_ARM_REG_PC, LOCKUP_PC)

    def reset(self, sp: Optional[int], pc: Optional[int]) -> None:
        """A core reset, `sp` and `pc` the words at 0x0 and 0x4 (None: unreadable). ARMv7-M B1.5.5: SP_main from
        vector 0, PC and EPSR.T from vector 1 (VTOR is 0 after reset); the rest of the register file, the
        exception state and the run state from scratch; S_RESET_ST set."""
        uc = self.uc
        for reg in GP_REGS[:13]:
            uc.reg_write(reg, 0)
        uc.reg_write(arm.UC_ARM_REG_IPSR, 0)
        uc.reg_write(arm.UC_ARM_REG_CONTROL, 0)
        uc.reg_write(arm.UC_ARM_REG_PRIMASK, 0)
        uc.reg_write(arm.UC_ARM_REG_BASEPRI, 0)
        uc.reg_write(arm.UC_ARM_REG_FAULTMASK, 0)
        uc.reg_write(arm.UC_ARM_REG_PSP, 0)
        uc.reg_write(arm.UC_ARM_REG_LR, 0xFFFF_FFFF)
        self.active_exception = 0
        self.exception_stack = []
        sp = 0xFFFF_FFFC if sp is None else sp & ~3
        pc = 0xFFFF_FFFF if pc is None else pc
        uc.reg_write(arm.UC_ARM_REG_MSP, sp)
        uc.reg_write(arm.UC_ARM_REG_PC, pc & ~1)
        self.thumb = bool(pc & 1)
        uc.reg_write(arm.UC_ARM_REG_XPSR, XPSR_T)
        self.halted = False
        self.lockup = False
        self.sleeping = False
        self._idle_until = None
        self._wait_flash = False
        self._flash_port.forget_polls()
        self._pending_reset = None
        self._resume_pc = None
        self.core_ps = self._clock.now_ps
        self.reset_seen = True

    def reset_debug(self) -> None:
        """A power-level reset also resets the debug logic: C_DEBUGEN, DEMCR and DFSR clear."""
        self.debugen = False
        self.demcr = 0
        self.dfsr = 0

    def read_core_register(self, regsel: int) -> int:
        """A register by DCRSR REGSEL number (ARMv7-M C1.6.3); unknown numbers read 0."""
        uc = self.uc
        if 0 <= regsel <= 14:
            return uc.reg_read(GP_REGS[regsel]) & 0xFFFF_FFFF
        if regsel == REGSEL_PC:
            return uc.reg_read(arm.UC_ARM_REG_PC) & 0xFFFF_FFFF
        if regsel == REGSEL_XPSR:
            xpsr = uc.reg_read(arm.UC_ARM_REG_XPSR) & ~XPSR_T & 0xFFFF_FFFF
            return xpsr | (XPSR_T if self.thumb else 0)
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
            self.thumb = bool(value & XPSR_T)
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
