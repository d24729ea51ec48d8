"""ARMv7-M numbers the virtual chip's core model uses (the SCS register bits live in `debug.py`).

Sources: ARMv7-M Architecture Reference Manual B1.4 (xPSR), B1.5 (exceptions, EXC_RETURN), C1.6.3 (DCRSR
REGSEL); Unicorn's register constants for the same registers.
"""
from __future__ import annotations

from unicorn import arm_const as arm

# xPSR bits.
XPSR_T = 1 << 24  # EPSR.T: Thumb state (always 1 on a working M-profile core)
XPSR_STKALIGN = 1 << 9  # in a stacked xPSR: the frame was realigned by 4 bytes

# Exception numbers and EXC_RETURN values (B1.5.2, B1.5.8).
NMI = 2
HARDFAULT = 3
SVCALL = 11
EXC_RETURN_THREAD_MSP = 0xFFFF_FFF9
EXC_RETURN_THREAD_PSP = 0xFFFF_FFFD
EXC_RETURN_HANDLER = 0xFFFF_FFF1
LOCKUP_PC = 0xFFFF_FFFE  # where a locked-up core fetches (B1.5.15)

# DCRSR REGSEL numbering (C1.6.3).
REGSEL_SP, REGSEL_LR, REGSEL_PC, REGSEL_XPSR, REGSEL_MSP, REGSEL_PSP = 13, 14, 15, 16, 17, 18
REGSEL_SPECIAL = 20  # CONTROL << 24 | FAULTMASK << 16 | BASEPRI << 8 | PRIMASK
REGSEL_FPSCR = 33
REGSEL_S0 = 64

# Unicorn registers: R0-R12, SP, LR in REGSEL order; the basic exception frame (R0-R3, R12, LR; then PC, xPSR).
GP_REGS = [arm.UC_ARM_REG_R0 + i for i in range(13)] + [arm.UC_ARM_REG_SP, arm.UC_ARM_REG_LR]
FRAME_REGS = [arm.UC_ARM_REG_R0, arm.UC_ARM_REG_R1, arm.UC_ARM_REG_R2, arm.UC_ARM_REG_R3, arm.UC_ARM_REG_R12,
              arm.UC_ARM_REG_LR]
