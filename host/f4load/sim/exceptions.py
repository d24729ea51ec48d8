"""The virtual STM32F407's exceptions and resets: HardFault, SVC, exception return, lockup, reset causes.

`ChipExceptions` holds the `Chip` methods (chip.py is the façade; the shared state is declared in base.py).

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

Resets: `reset(cause)` with "por", "bor"/"brownout" (power: also the debug domain), "pin", "sysresetreq",
"iwdg" (system reset: flash, RCC, IWDG, CRC, SCB, core) and "vectreset" (core only). RCC_CSR flags come from
`peripherals.RESET_FLAGS_FOR_CAUSE`. `nrst_asserted = True` is a pin reset by itself (no separate
`reset("pin")` is needed) and holds the chip in reset until released. After a reset the core starts from the
vector table at 0x0 (erased flash: PC 0xFFFF_FFFE, which locks the core up when it runs), unless NRST is
held, or DEMCR.VC_CORERESET halts it before the first instruction, or the debugger has a halt pending. When
the core does start, the application's effects from `faults` are applied at once (`_application_runs`): IWDG
started, sticky SR bits, a bad FLASH_KEYR write.
"""
from __future__ import annotations

from typing import Optional

from unicorn import UcError
from unicorn import arm_const as arm

from f4load.registers import FLASH_BASE, FLASH_KEYR
from f4load.sim.armv7m import (
    EXC_RETURN_HANDLER,
    EXC_RETURN_THREAD_MSP,
    EXC_RETURN_THREAD_PSP,
    FRAME_REGS,
    GP_REGS,
    HARDFAULT,
    LOCKUP_PC,
    REGSEL_XPSR,
    XPSR_STKALIGN,
    XPSR_T,
)
from f4load.sim.base import ChipBase
from f4load.sim.debug import (
    CFSR_IBUSERR,
    CFSR_IMPRECISERR,
    CFSR_INVPC,
    CFSR_INVSTATE,
    CFSR_STKERR,
    DEMCR_VC_CORERESET,
    DEMCR_VC_HARDERR,
    DFSR_VCATCH,
    HFSR_FORCED,
)
from f4load.sim.flash import BusFault
from f4load.sim.memory_map import stack_writable
from f4load.sim.peripherals import RESET_FLAGS_FOR_CAUSE, iwdg_settings_for

RESET_CAUSES = ("por", "bor", "brownout", "pin", "sysresetreq", "iwdg", "vectreset")
POWER_RESETS = ("por", "bor", "brownout")
BAD_FLASH_KEY = 0x0BAD_0BAD  # what the "application" of the cr_locked_by_bad_key fault writes to FLASH_KEYR


class ChipExceptions(ChipBase):
    """Exceptions and resets: the part of `Chip` described in the module docstring."""

    # ==========================================================================================================
    # Exceptions (simplified ARMv7-M; see the module docstring)
    def _take_fault(self, cfsr: int, bfar: Optional[int] = None, hfsr: int = HFSR_FORCED) -> None:
        scs = self.scs
        scs.cfsr |= cfsr
        scs.hfsr |= hfsr
        if bfar is not None:
            scs.bfar = bfar & 0xFFFF_FFFF
        if self.active_exception == HARDFAULT or (self.priority_below_zero() and cfsr != CFSR_IMPRECISERR):
            # A fault in the HardFault handler, or a synchronous one with FAULTMASK set, cannot be taken: lockup
            # (B1.5.15). (An imprecise one under FAULTMASK would wait until the priority drops; the model takes
            # it at once.)
            self._enter_lockup()
            return
        self._enter_exception(HARDFAULT, self.uc.reg_read(arm.UC_ARM_REG_PC))
        if not self.lockup and self.debugen and self.demcr & DEMCR_VC_HARDERR:
            self.halt(DFSR_VCATCH)

    def _enter_exception(self, number: int, return_pc: int) -> None:
        uc = self.uc
        handler_mode = self.active_exception != 0
        control = uc.reg_read(arm.UC_ARM_REG_CONTROL)
        use_psp = not handler_mode and bool(control & 2)
        sp = uc.reg_read(arm.UC_ARM_REG_PSP if use_psp else arm.UC_ARM_REG_MSP)
        xpsr = self.read_core_register(REGSEL_XPSR)
        if sp & 4:
            sp -= 4
            xpsr |= XPSR_STKALIGN
        else:
            xpsr &= ~XPSR_STKALIGN
        frame_sp = (sp - 32) & 0xFFFF_FFFF
        words = [uc.reg_read(r) for r in FRAME_REGS] + [return_pc & ~1, xpsr]
        frame = b"".join((w & 0xFFFF_FFFF).to_bytes(4, "little") for w in words)
        if not stack_writable(frame_sp):
            self.scs.cfsr |= CFSR_STKERR
            self._enter_lockup()
            return
        self.memory.write_ram(frame_sp, frame)
        uc.reg_write(arm.UC_ARM_REG_PSP if use_psp else arm.UC_ARM_REG_MSP, frame_sp)
        if use_psp:
            uc.reg_write(arm.UC_ARM_REG_CONTROL, control & ~2)
        exc_return = EXC_RETURN_HANDLER if handler_mode else (
            EXC_RETURN_THREAD_PSP if use_psp else EXC_RETURN_THREAD_MSP)
        handler = self._read_vector(number)
        if handler is None or not handler & 1 or not self.bus.executable(handler & ~1):
            if number == HARDFAULT:
                # The entry completes (frame pushed, IPSR = 3, LR = EXC_RETURN); the core then locks up
                # fetching the handler (ARMv7-M B1.5.15: a fault while executing at HardFault priority).
                self._set_exception(number, exc_return)
                self._enter_lockup()
            else:
                self._set_exception(number, exc_return)
                self._take_fault(CFSR_INVSTATE if handler is not None and not handler & 1 else CFSR_IBUSERR)
            return
        self._set_exception(number, exc_return)
        uc.reg_write(arm.UC_ARM_REG_PC, handler & ~1)

    def _set_exception(self, number: int, exc_return: int) -> None:
        self._exception_stack.append(self.active_exception)
        self.active_exception = number
        self.uc.reg_write(arm.UC_ARM_REG_IPSR, number)
        self.uc.reg_write(arm.UC_ARM_REG_LR, exc_return)

    def _exception_return(self) -> None:
        uc = self.uc
        exc_return = uc.reg_read(arm.UC_ARM_REG_PC) | 1
        if not self._exception_stack or exc_return not in (EXC_RETURN_HANDLER, EXC_RETURN_THREAD_MSP,
                                                            EXC_RETURN_THREAD_PSP):
            self._take_fault(CFSR_INVPC)
            return
        use_psp = exc_return == EXC_RETURN_THREAD_PSP
        sp = uc.reg_read(arm.UC_ARM_REG_PSP if use_psp else arm.UC_ARM_REG_MSP)
        try:
            frame = bytes(uc.mem_read(sp, 32))
        except UcError:
            self._take_fault(CFSR_STKERR)
            return
        words = [int.from_bytes(frame[i:i + 4], "little") for i in range(0, 32, 4)]
        for reg, word in zip(FRAME_REGS, words[:6]):
            uc.reg_write(reg, word)
        xpsr = words[7]
        sp += 32 + (4 if xpsr & XPSR_STKALIGN else 0)
        uc.reg_write(arm.UC_ARM_REG_PSP if use_psp else arm.UC_ARM_REG_MSP, sp)
        self.active_exception = self._exception_stack.pop()
        uc.reg_write(arm.UC_ARM_REG_IPSR, self.active_exception)
        if use_psp:
            uc.reg_write(arm.UC_ARM_REG_CONTROL, uc.reg_read(arm.UC_ARM_REG_CONTROL) | 2)
        self._thumb = bool(xpsr & XPSR_T)
        uc.reg_write(arm.UC_ARM_REG_XPSR, (xpsr & ~0x1FF & ~XPSR_STKALIGN) | XPSR_T | self.active_exception)
        uc.reg_write(arm.UC_ARM_REG_PC, words[6] & ~1)

    def _enter_lockup(self) -> None:
        self.lockup = True
        self.uc.reg_write(arm.UC_ARM_REG_PC, LOCKUP_PC)

    def _read_vector(self, number: int) -> Optional[int]:
        address = self.scs.vtor + 4 * number
        return self.bus.core_read32(address)

    # ==========================================================================================================
    # Resets
    @property
    def nrst_asserted(self) -> bool:
        return self._nrst

    @nrst_asserted.setter
    def nrst_asserted(self, asserted: bool) -> None:
        """NRST low: a pin reset, then the chip stays in reset (time passes, no instructions) until released.
        A probe that already called `reset("pin")` at this very moment does not cause a second one."""
        asserted = bool(asserted)
        if asserted == self._nrst:
            return
        if asserted:
            self._nrst = True
            same = self._last_reset == ("pin", self.clock.now_ps, self.instructions)
            self._system_reset("pin", count=not same)
        else:
            self._nrst = False
            self._run_state_changed()
            self._leave_reset()

    def request_reset(self, cause: str) -> None:
        """A reset asked for by the core (AIRCR), the flash model (reset_during) or the debugger: at once when
        the core is not running, else as soon as the current instruction is abandoned."""
        if self.in_run:
            self._pending_reset = cause
            self.uc.emu_stop()
        else:
            self.reset(cause)

    def reset(self, cause: str) -> None:
        """A reset of the given cause; see the module docstring."""
        if cause not in RESET_CAUSES:
            raise ValueError(f"unknown reset cause {cause!r}; known: {', '.join(RESET_CAUSES)}")
        if self.in_run:
            self.request_reset(cause)
            return
        self._system_reset(cause, count=True)

    def _system_reset(self, cause: str, count: bool) -> None:
        if count:
            self.resets[cause] = self.resets.get(cause, 0) + 1
        self._last_reset = (cause, self.clock.now_ps, self.instructions)
        self._pending_reset = None
        self.watchdog.sync()
        if cause != "vectreset":
            power = cause in POWER_RESETS
            self.flash.system_reset()
            self.rcc.reset(power_on=power)
            if count:
                self.rcc.record_reset(RESET_FLAGS_FOR_CAUSE[cause])
            self.iwdg.reset()
            self.crc.reset()
            if power:
                self.power_cycles += 1  # the SW-DP is reset too (debug.DebugPort follows this count)
                self.debugen = False
                self.demcr = 0
                self.dfsr = 0
                self.scs.reset_debug()
            self.scs.reset_system()
            if self.options.hardware_watchdog:
                self.iwdg.hardware_start()  # WDG_SW = 0: the IWDG runs from every reset (RM0090 19.3.2)
        self._core_reset()
        self.reset_seen = True
        self._run_state_changed()
        if not self._nrst:
            self._leave_reset()

    def _core_reset(self) -> None:
        uc = self.uc
        self.memory.apply_fixups()
        self.memory.flush_all_code()
        self.memory.protect_flash(self.flash.reads_blocked)
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
        self._exception_stack = []
        # ARMv7-M B1.5.5: SP_main from vector 0, PC and EPSR.T from vector 1 (VTOR is 0 after reset).
        sp = self.bus.core_read32(0)
        pc = self.bus.core_read32(4)
        sp = 0xFFFF_FFFC if sp is None else sp & ~3
        pc = 0xFFFF_FFFF if pc is None else pc
        uc.reg_write(arm.UC_ARM_REG_MSP, sp)
        uc.reg_write(arm.UC_ARM_REG_PC, pc & ~1)
        self._thumb = bool(pc & 1)
        uc.reg_write(arm.UC_ARM_REG_XPSR, XPSR_T)
        self.halted = False
        self.lockup = False
        self.sleeping = False
        self._idle_until = None
        self._wait_flash = False
        self.flash_port.forget_polls()
        self._resume_pc = None
        self.core_ps = self.clock.now_ps

    def _leave_reset(self) -> None:
        """The core leaves reset: a halt requested during reset or VC_CORERESET keeps it halted on the reset
        vector; otherwise the application starts."""
        if self.halted:
            return
        if self.debugen and self.demcr & DEMCR_VC_CORERESET:
            self.halt(DFSR_VCATCH)
            return
        self._application_runs()

    def _application_runs(self) -> None:
        """What the faulted application does as soon as it runs (faults.py, "what the application does")."""
        faults = self.faults
        if faults.iwdg_timeout_ms is not None:
            prescaler, reload = iwdg_settings_for(faults.iwdg_timeout_ms)
            self.watchdog.sync()
            self.iwdg.start(prescaler, reload)
        if faults.sticky_sr:
            self.flash.set_sticky(faults.sticky_sr)
        if faults.cr_locked_by_bad_key:
            try:
                self.flash.write_register(FLASH_KEYR - FLASH_BASE, BAD_FLASH_KEY)
            except BusFault:
                pass  # the application takes the bus error; CR stays locked until the next reset

    def power_on(self) -> None:
        """Power-on reset: option bytes loaded, the application (if any) runs."""
        self._system_reset("por", count=True)
