"""The virtual STM32F407's exception model: HardFault, SVC, exception return and lockup, on the core's registers.

`Exceptions` is what the core (core.py) hands an exception to; it acts on the core's register file (Unicorn,
IPSR in `active_exception`, the preempted exceptions in `exception_stack`), the fault status registers of the
System Control Space (CFSR, HFSR, BFAR, VTOR), the stack in RAM (`Memory`) and the vector table as the core
reads it (`Bus`). It owns no state of its own.

Faults of the core (simplified ARMv7-M, B1.5): an unmapped or non-executable access, executing CCM, a bus
error from a peripheral (wrong flash key; see bus.py for precise/imprecise and BFHFNMIGN), an undefined
instruction or a BKPT without C_DEBUGEN escalate to HardFault: the 8-word basic frame is pushed (no FP
context), LR = EXC_RETURN, PC from vector 3 of VTOR; CFSR, HFSR and BFAR are set. A fault in the HardFault
handler, a synchronous fault with FAULTMASK set (execution priority -1, B1.5.15), an unreadable or invalid
handler address, or a stacking error locks the core up (DHCSR.S_LOCKUP, PC 0xFFFF_FFFE) until a reset or a
debugger halt. An imprecise fault under FAULTMASK is taken at once (silicon would keep it pending).
With DEMCR.VC_HARDERR and C_DEBUGEN the core halts (DFSR.VCATCH) on the first instruction of the handler.
SVC enters its handler the same way; exception return pops the frame. No interrupts, priorities or
FP lazy stacking.
"""
from __future__ import annotations

from typing import Optional

from unicorn import UcError
from unicorn import arm_const as arm

from f4load.sim.armv7m import (
    EXC_RETURN_HANDLER,
    EXC_RETURN_THREAD_MSP,
    EXC_RETURN_THREAD_PSP,
    FRAME_REGS,
    HARDFAULT,
    REGSEL_XPSR,
    XPSR_STKALIGN,
    XPSR_T,
)
from f4load.sim.bus import Bus
from f4load.sim.core import Core
from f4load.sim.debug import (
    CFSR_IBUSERR,
    CFSR_IMPRECISERR,
    CFSR_INVPC,
    CFSR_INVSTATE,
    CFSR_STKERR,
    DEMCR_VC_HARDERR,
    DFSR_VCATCH,
    HFSR_FORCED,
    SystemControlSpace,
)
from f4load.sim.memory import Memory
from f4load.sim.memory_map import stack_writable


class Exceptions:
    """Exception entry and return for the core (module docstring); core.ExceptionEntry."""

    def __init__(self, core: Core, scs: SystemControlSpace, memory: Memory, bus: Bus) -> None:
        self._core = core
        self._scs = scs
        self._memory = memory
        self._bus = bus

    def take_fault(self, cfsr: int, bfar: Optional[int] = None, hfsr: int = HFSR_FORCED) -> None:
        core, scs = self._core, self._scs
        scs.cfsr |= cfsr
        scs.hfsr |= hfsr
        if bfar is not None:
            scs.bfar = bfar & 0xFFFF_FFFF
        if core.active_exception == HARDFAULT or (core.priority_below_zero() and cfsr != CFSR_IMPRECISERR):
            # A fault in the HardFault handler, or a synchronous one with FAULTMASK set, cannot be taken: lockup
            # (B1.5.15). (An imprecise one under FAULTMASK would wait until the priority drops; the model takes
            # it at once.)
            core.lock_up()
            return
        self.enter_exception(HARDFAULT, core.uc.reg_read(arm.UC_ARM_REG_PC))
        if not core.lockup and core.debugen and core.demcr & DEMCR_VC_HARDERR:
            core.halt(DFSR_VCATCH)

    def enter_exception(self, number: int, return_pc: int) -> None:
        core = self._core
        uc = core.uc
        handler_mode = core.active_exception != 0
        control = uc.reg_read(arm.UC_ARM_REG_CONTROL)
        use_psp = not handler_mode and bool(control & 2)
        sp = uc.reg_read(arm.UC_ARM_REG_PSP if use_psp else arm.UC_ARM_REG_MSP)
        xpsr = core.read_core_register(REGSEL_XPSR)
        if sp & 4:
            sp -= 4
            xpsr |= XPSR_STKALIGN
        else:
            xpsr &= ~XPSR_STKALIGN
        frame_sp = (sp - 32) & 0xFFFF_FFFF
        words = [uc.reg_read(r) for r in FRAME_REGS] + [return_pc & ~1, xpsr]
        frame = b"".join((w & 0xFFFF_FFFF).to_bytes(4, "little") for w in words)
        if not stack_writable(frame_sp):
            self._scs.cfsr |= CFSR_STKERR
            core.lock_up()
            return
        self._memory.write_ram(frame_sp, frame)
        uc.reg_write(arm.UC_ARM_REG_PSP if use_psp else arm.UC_ARM_REG_MSP, frame_sp)
        if use_psp:
            uc.reg_write(arm.UC_ARM_REG_CONTROL, control & ~2)
        exc_return = EXC_RETURN_HANDLER if handler_mode else (
            EXC_RETURN_THREAD_PSP if use_psp else EXC_RETURN_THREAD_MSP)
        handler = self._bus.core_read32(self._scs.vtor + 4 * number)
        if handler is None or not handler & 1 or not self._bus.executable(handler & ~1):
            if number == HARDFAULT:
                # The entry completes (frame pushed, IPSR = 3, LR = EXC_RETURN); the core then locks up
                # fetching the handler (ARMv7-M B1.5.15: a fault while executing at HardFault priority).
                self._set_exception(number, exc_return)
                core.lock_up()
            else:
                self._set_exception(number, exc_return)
                self.take_fault(CFSR_INVSTATE if handler is not None and not handler & 1 else CFSR_IBUSERR)
            return
        self._set_exception(number, exc_return)
        uc.reg_write(arm.UC_ARM_REG_PC, handler & ~1)

    def _set_exception(self, number: int, exc_return: int) -> None:
        core = self._core
        core.exception_stack.append(core.active_exception)
        core.active_exception = number
        core.uc.reg_write(arm.UC_ARM_REG_IPSR, number)
        core.uc.reg_write(arm.UC_ARM_REG_LR, exc_return)

    def exception_return(self) -> None:
        core = self._core
        uc = core.uc
        exc_return = uc.reg_read(arm.UC_ARM_REG_PC) | 1
        if not core.exception_stack or exc_return not in (EXC_RETURN_HANDLER, EXC_RETURN_THREAD_MSP,
                                                           EXC_RETURN_THREAD_PSP):
            self.take_fault(CFSR_INVPC)
            return
        use_psp = exc_return == EXC_RETURN_THREAD_PSP
        sp = uc.reg_read(arm.UC_ARM_REG_PSP if use_psp else arm.UC_ARM_REG_MSP)
        try:
            frame = bytes(uc.mem_read(sp, 32))
        except UcError:
            self.take_fault(CFSR_STKERR)
            return
        words = [int.from_bytes(frame[i:i + 4], "little") for i in range(0, 32, 4)]
        for reg, word in zip(FRAME_REGS, words[:6]):
            uc.reg_write(reg, word)
        xpsr = words[7]
        sp += 32 + (4 if xpsr & XPSR_STKALIGN else 0)
        uc.reg_write(arm.UC_ARM_REG_PSP if use_psp else arm.UC_ARM_REG_MSP, sp)
        core.active_exception = core.exception_stack.pop()
        uc.reg_write(arm.UC_ARM_REG_IPSR, core.active_exception)
        if use_psp:
            uc.reg_write(arm.UC_ARM_REG_CONTROL, uc.reg_read(arm.UC_ARM_REG_CONTROL) | 2)
        core.thumb = bool(xpsr & XPSR_T)
        uc.reg_write(arm.UC_ARM_REG_XPSR, (xpsr & ~0x1FF & ~XPSR_STKALIGN) | XPSR_T | core.active_exception)
        uc.reg_write(arm.UC_ARM_REG_PC, words[6] & ~1)
