"""The user option bytes of the STM32F405/407/415/417: decoding FLASH_OPTCR and changing it over the debugger.

FLASH_OPTCR (RM0090 3.8.6, 3.7) shows the option bytes loaded at reset:

| bits | field | meaning |
|---|---|---|
| 27:16 | nWRP | bit i = 0: sector i is write-protected (erase and program set WRPERR) |
| 15:8 | RDP | 0xAA level 0; 0xCC level 2 (permanent, debug off for good); anything else level 1 |
| 7 | nRST_STDBY | 0: entering Standby resets the chip |
| 6 | nRST_STOP | 0: entering Stop resets the chip |
| 5 | WDG_SW | 1: software watchdog; 0: hardware watchdog, the IWDG starts at every reset |
| 3:2 | BOR_LEV | 00 level 3 (2.70-3.60 V), 01 level 2, 10 level 1, 11 off |
| 1 | OPTSTRT | starts option-byte programming |
| 0 | OPTLOCK | OPTCR is write-protected until OPTKEYR is unlocked |

Changing them (RM0090 3.6.5 "Modifying user option bytes", 3.7.2) is done from the host, with the core halted:

1. wait until FLASH_SR.BSY is 0 (a write to a flash register while BSY=1 stalls the bus, RM0090 3.6);
2. clear the sticky SR error flags (write 1s) so the result read afterwards is this operation's own;
3. unlock OPTCR: OPTKEY1 then OPTKEY2 into FLASH_OPTKEYR (a wrong sequence is a bus error and keeps OPTCR
   locked until the next reset);
4. write the new value into OPTCR, then the same value with OPTSTRT=1;
5. wait until BSY is 0 again (250 ms typical, 500 ms maximum; plus a mass erase of the whole main flash, 8 s
   typical / 16 s maximum at x32, when RDP goes from level 1 to level 0);
6. relock (OPTLOCK=1), read FLASH_SR for errors (WRPERR: the option bytes are frozen by RDP level 2) and
   read OPTCR back: every field asked for must have taken; `OptionBytesError` names the one that did not.

The wait in step 5 is done by a six-instruction loop the core runs from SRAM (`WAIT_LOOP`): it polls BSY and
refreshes the IWDG (a hardware watchdog, WDG_SW=0, runs whenever the core does and would otherwise reset the
chip in the middle of a regression erase), then halts on a BKPT. The host only waits for the halt, which works
the same on every probe and on the virtual chip's zero-cost link.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from f4load import protocol
from f4load.errors import OptionBytesError, ProtectionError
from f4load.part import Part
from f4load.registers import (  # noqa: F401 - BOR_FIELD re-exported
    BOR_FIELD,
    BOR_LEVEL_NAMES,
    DBGMCU_APB1_FZ,
    DBGMCU_APB1_FZ_DBG_IWDG_STOP,
    FLASH_OPTCR,
    FLASH_OPTCR_BOR_LEV_MASK,
    FLASH_OPTCR_BOR_LEV_SHIFT,
    FLASH_OPTCR_NRST_STDBY,
    FLASH_OPTCR_NRST_STOP,
    FLASH_OPTCR_NWRP_MASK,
    FLASH_OPTCR_NWRP_SHIFT,
    FLASH_OPTCR_OPTLOCK,
    FLASH_OPTCR_OPTSTRT,
    FLASH_OPTCR_RDP_MASK,
    FLASH_OPTCR_RDP_SHIFT,
    FLASH_OPTCR_WDG_SW,
    FLASH_OPTKEY1,
    FLASH_OPTKEY2,
    FLASH_OPTKEYR,
    FLASH_SR,
    FLASH_SR_BSY,
    FLASH_SR_ERRORS,
    IWDG_KEY_RELOAD,
    IWDG_KR,
    RDP_LEVEL0,
    RDP_LEVEL2,
)

# The user bits of OPTCR (everything but OPTLOCK and OPTSTRT).
USER_BITS = 0x0FFF_FFFC
RDP_LEVEL1 = 0x55  # any value other than 0xAA and 0xCC is level 1; 0x55 is the one ST's tools write
# BOR_LEV field values by level name (RM0090 3.7.1): 3 = highest threshold.
BOR_THRESHOLD_V = {0b00: 2.70, 0b01: 2.40, 0b10: 2.10, 0b11: 1.80}  # lowest VDD each level keeps the chip out of reset

# Where the wait loop runs: the start of the stub's data buffers (free between streams), SRAM1.
WAIT_LOOP_ADDRESS = 0x2000_2000
# r0 = &FLASH_SR, r2 = &IWDG_KR, r3 = 0xAAAA (reload key):
#   loop: str r3, [r2]      ; refresh the IWDG (harmless when it does not run)
#         ldr r1, [r0]      ; FLASH_SR
#         lsls r1, r1, #15  ; BSY (bit 16) -> N flag
#         bmi loop
#         bkpt #0           ; done: the debugger sees the core halt
#         b .               ; (never reached: BKPT halts with C_DEBUGEN set)
WAIT_LOOP = bytes.fromhex("1360" "0168" "c903" "fbd4" "00be" "fee7")
XPSR_THUMB = 1 << 24

OPTION_TIMEOUT_S = 2.0         # 500 ms maximum (DS8626 Table 40 gives 16 KB sector erase times; ST: same)
REGRESSION_TIMEOUT_S = 40.0    # + mass erase at x8 maximum, 32 s


@dataclass(frozen=True)
class OptionBytes:
    """The user option bytes as FLASH_OPTCR shows them after reset (RM0090 3.8.6, 3.7)."""
    optcr: int

    @property
    def rdp(self) -> int:
        return (self.optcr & FLASH_OPTCR_RDP_MASK) >> FLASH_OPTCR_RDP_SHIFT

    @property
    def rdp_level(self) -> int:
        """0xAA level 0, 0xCC level 2, anything else level 1 (RM0090 3.7.3)."""
        return 0 if self.rdp == RDP_LEVEL0 else 2 if self.rdp == RDP_LEVEL2 else 1

    @property
    def nwrp(self) -> int:
        """12 bits, bit i = 0: sector i is write-protected."""
        return (self.optcr & FLASH_OPTCR_NWRP_MASK) >> FLASH_OPTCR_NWRP_SHIFT

    def write_protected(self, part: Part) -> List[int]:
        return [s.index for s in part.sectors if not self.nwrp >> s.index & 1]

    @property
    def software_watchdog(self) -> bool:
        """WDG_SW = 1: the IWDG runs only when software starts it; 0: it starts at every reset."""
        return bool(self.optcr & FLASH_OPTCR_WDG_SW)

    @property
    def bor_level(self) -> int:
        return (self.optcr & FLASH_OPTCR_BOR_LEV_MASK) >> FLASH_OPTCR_BOR_LEV_SHIFT

    @property
    def bor_name(self) -> str:
        return BOR_LEVEL_NAMES[self.bor_level]

    @property
    def bor_threshold(self) -> float:
        """The supply voltage below which the brown-out reset holds the chip in reset."""
        return BOR_THRESHOLD_V[self.bor_level]

    @property
    def reset_on_stop(self) -> bool:
        """nRST_STOP = 0: entering Stop mode resets the chip."""
        return not self.optcr & FLASH_OPTCR_NRST_STOP

    @property
    def reset_on_standby(self) -> bool:
        return not self.optcr & FLASH_OPTCR_NRST_STDBY

    # --- new values (user bits only) -------------------------------------------------------------------
    def with_nwrp(self, nwrp: int) -> OptionBytes:
        return OptionBytes(self.optcr & ~FLASH_OPTCR_NWRP_MASK | (nwrp & 0xFFF) << FLASH_OPTCR_NWRP_SHIFT)

    def protecting(self, sectors: Iterable[int]) -> OptionBytes:
        nwrp = self.nwrp
        for index in sectors:
            nwrp &= ~(1 << index)
        return self.with_nwrp(nwrp)

    def unprotecting(self, sectors: Iterable[int]) -> OptionBytes:
        nwrp = self.nwrp
        for index in sectors:
            nwrp |= 1 << index
        return self.with_nwrp(nwrp)

    def with_rdp(self, rdp: int) -> OptionBytes:
        return OptionBytes(self.optcr & ~FLASH_OPTCR_RDP_MASK | (rdp & 0xFF) << FLASH_OPTCR_RDP_SHIFT)

    def with_bor(self, field: int) -> OptionBytes:
        return OptionBytes(self.optcr & ~FLASH_OPTCR_BOR_LEV_MASK | (field & 3) << FLASH_OPTCR_BOR_LEV_SHIFT)

    def with_bit(self, bit: int, value: bool) -> OptionBytes:
        return OptionBytes(self.optcr | bit if value else self.optcr & ~bit)

    def differences(self, other: OptionBytes) -> List[Tuple[str, str, str]]:
        """The fields that differ: (name, this value, the other's value), e.g. ("nWRP", "0xff0", "0xfff")."""
        return [field for field in self._fields(other) if field[1] != field[2]]

    def _fields(self, other: OptionBytes) -> List[Tuple[str, str, str]]:
        return [
            ("nWRP", f"{self.nwrp:#05x}", f"{other.nwrp:#05x}"),
            ("RDP", f"{self.rdp:#04x}", f"{other.rdp:#04x}"),
            ("nRST_STDBY", str(int(not self.reset_on_standby)), str(int(not other.reset_on_standby))),
            ("nRST_STOP", str(int(not self.reset_on_stop)), str(int(not other.reset_on_stop))),
            ("WDG_SW", str(int(self.software_watchdog)), str(int(other.software_watchdog))),
            ("BOR_LEV", f"{self.bor_level:#04b}", f"{other.bor_level:#04b}"),
        ]


def read(target: Any) -> OptionBytes:
    return OptionBytes(target.read32(FLASH_OPTCR))


def sector_ranges(indexes: Iterable[int]) -> str:
    """[0, 1, 2, 3, 5] -> "0-3,5": the form `f4load protect/unprotect` take."""
    items = sorted(set(indexes))
    runs: List[List[int]] = []
    for i in items:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


class OptionProgrammer:
    """Changes the option bytes of a halted target (the sequence in the module docstring).

    `target` is a pyocd target with the core halted; `now` a clock in seconds (the virtual chip's clock when
    there is one, so timeouts mean the same there as on a board)."""

    def __init__(self, target: Any, now: Optional[Callable[[], float]] = None) -> None:
        self.target = target
        self.now = now or time.monotonic

    def program(self, new: OptionBytes, allow_rdp2: bool = False) -> OptionBytes:
        """Program `new` (its user bits) and return what OPTCR reads afterwards. Nothing is written when the
        option bytes already hold it."""
        target = self.target
        current = read(target)
        if (current.optcr & USER_BITS) == (new.optcr & USER_BITS):
            return current
        if new.rdp_level == 2 and not allow_rdp2:
            raise ProtectionError("refusing to set RDP level 2: it is permanent and disables the debug port for good")
        if current.rdp_level == 2:
            raise ProtectionError("the option bytes are frozen: RDP level 2 is permanent (RM0090 3.7.3)")
        regression = current.rdp_level == 1 and new.rdp_level == 0
        self._wait_idle(OPTION_TIMEOUT_S, "before option-byte programming")
        target.write32(FLASH_SR, FLASH_SR_ERRORS)  # sticky flags are write-1-to-clear (RM0090 3.8.4)
        if target.read32(FLASH_OPTCR) & FLASH_OPTCR_OPTLOCK:
            try:
                target.write32(FLASH_OPTKEYR, FLASH_OPTKEY1)
                target.write32(FLASH_OPTKEYR, FLASH_OPTKEY2)
            except Exception as error:  # pyocd TransferFaultError: the key write was a bus error
                raise OptionBytesError(
                    "FLASH_OPTCR cannot be unlocked: a wrong key was written to FLASH_OPTKEYR since the last "
                    f"reset (RM0090 3.7.2); connect under reset and try again ({' '.join(str(error).split())})"
                ) from None
            if target.read32(FLASH_OPTCR) & FLASH_OPTCR_OPTLOCK:
                raise OptionBytesError("FLASH_OPTCR stayed locked after the OPTKEYR key sequence")
        value = new.optcr & USER_BITS
        target.write32(FLASH_OPTCR, value)
        target.write32(FLASH_OPTCR, value | FLASH_OPTCR_OPTSTRT)
        self._wait_idle(REGRESSION_TIMEOUT_S if regression else OPTION_TIMEOUT_S, "option-byte programming")
        sr = target.read32(FLASH_SR)
        target.write32(FLASH_OPTCR, target.read32(FLASH_OPTCR) | FLASH_OPTCR_OPTLOCK)
        after = read(target)
        wrong = after.differences(new)
        if sr & FLASH_SR_ERRORS or wrong:
            flags = ", ".join(protocol.sr_bit_names(sr & FLASH_SR_ERRORS)) or "none"
            detail = "; ".join(f"{name} reads {got}, not {wanted}: that bit did not take"
                               for name, got, wanted in wrong) or "every field took"
            raise OptionBytesError(f"option-byte programming failed: FLASH_SR error flags {flags}; {detail}")
        return after

    def _wait_idle(self, timeout_s: float, what: str) -> None:
        """Wait until FLASH_SR.BSY is 0, by letting the core run WAIT_LOOP from SRAM (module docstring)."""
        target = self.target
        if not target.read32(FLASH_SR) & FLASH_SR_BSY:
            return
        self._run_wait_loop(timeout_s, what)

    def _run_wait_loop(self, timeout_s: float, what: str) -> None:
        target = self.target
        target.write_memory_block8(WAIT_LOOP_ADDRESS, list(WAIT_LOOP))
        # Freeze the IWDG whenever the core is halted (RM0090 38.16.4); the loop refreshes it while it runs.
        target.write32(DBGMCU_APB1_FZ, target.read32(DBGMCU_APB1_FZ) | DBGMCU_APB1_FZ_DBG_IWDG_STOP)
        registers: Dict[str, int] = {"r0": FLASH_SR, "r2": IWDG_KR, "r3": IWDG_KEY_RELOAD,
                                     "xpsr": XPSR_THUMB, "pc": WAIT_LOOP_ADDRESS}
        target.write_core_registers_raw(list(registers), list(registers.values()))
        target.resume()
        deadline = self.now() + timeout_s
        while not target.is_halted():
            if self.now() > deadline:
                target.halt()
                raise OptionBytesError(f"FLASH_SR.BSY still set {timeout_s:g} s into {what}")
        if target.read32(FLASH_SR) & FLASH_SR_BSY:
            raise OptionBytesError(f"the core stopped waiting during {what} while FLASH_SR.BSY was still set "
                                   "(did the target reset?)")
