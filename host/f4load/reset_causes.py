"""Why the chip reset, from RCC_CSR's flags, in RM0090's terms, and what to do about it.

RCC_CSR (RM0090 7.3.21 and the reset circuit of 7.1; digest "Identity, reset flags..."):
- every internal reset source (IWDG, WWDG, software, low-power, power) drives NRST low through the pulse
  generator, so PINRSTF comes with the real cause; PINRSTF *alone* is the pin itself (a button, a supervisor,
  the probe's reset line);
- BORRSTF is set by a POR/PDR *and* by a BOR, PORRSTF only by a POR/PDR: BORRSTF without PORRSTF is a
  brown-out (VDD below the BOR threshold, above the power-down one);
- PORRSTF (with BORRSTF and PINRSTF) is a power-down/power-on: after plugging the board in, an ordinary
  power-up; in the middle of an erase, the supply collapsed below the POR/PDR threshold (about 1.7 V) - with
  BOR_LEV off (the factory setting) that is how a brown-out shows.
The specific flags are checked first, PINRSTF last. `classify(flags, during_work)` returns a `ResetCause`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from f4load.registers import (
    RCC_CSR_BORRSTF,
    RCC_CSR_IWDGRSTF,
    RCC_CSR_LPWRRSTF,
    RCC_CSR_PINRSTF,
    RCC_CSR_PORRSTF,
    RCC_CSR_SFTRSTF,
    RCC_CSR_WWDGRSTF,
    RESET_FLAGS,
)

# RCC_CSR reset flags by their RM0090 names, most telling first.
FLAG_NAMES = {RCC_CSR_IWDGRSTF: "IWDGRSTF", RCC_CSR_WWDGRSTF: "WWDGRSTF", RCC_CSR_LPWRRSTF: "LPWRRSTF",
              RCC_CSR_SFTRSTF: "SFTRSTF", RCC_CSR_BORRSTF: "BORRSTF", RCC_CSR_PORRSTF: "PORRSTF",
              RCC_CSR_PINRSTF: "PINRSTF"}

# Cause keys (stable: the run journal stores them).
IWDG, WWDG, LOW_POWER, SOFTWARE = "iwdg", "wwdg", "low-power", "software"
BROWN_OUT, POWER, PIN, UNKNOWN = "brown-out", "power", "pin", "unknown"
SUPPLY_CAUSES = (BROWN_OUT, POWER)

SUPPLY_STEP = ("check the board's supply (its current capability under load) and the VCAP1/VCAP2 capacitors "
               "(2.2 uF each, DS8626); an x32 erase draws the most current, `--psize x8` draws less")


def flag_names(flags: int) -> List[str]:
    """["BORRSTF", "PINRSTF"] for the reset flags set in `flags`."""
    return [name for bit, name in FLAG_NAMES.items() if flags & bit]


@dataclass(frozen=True)
class ResetCause:
    """What RCC_CSR's flags say: `key` (one of the keys above), `name` ("brown-out"), `meaning` (a sentence),
    `next_step` (what to do), `flags` (the raw flags)."""
    key: str
    name: str
    meaning: str
    next_step: str
    flags: int

    @property
    def supply(self) -> bool:
        """The supply let go (brown-out, or a power-down in the middle of the work)."""
        return self.key in SUPPLY_CAUSES

    def describe(self) -> str:
        """"RCC_CSR reset flags BORRSTF, PINRSTF: brown-out: <meaning>"."""
        names = ", ".join(flag_names(self.flags)) or "none"
        return f"RCC_CSR reset flags {names}: {self.name}: {self.meaning}"


def classify(flags: int, during_work: bool = True) -> ResetCause:
    """The cause of a reset with these RCC_CSR flags. `during_work`: the reset came in the middle of an erase
    or program (a power-on reset then means the supply collapsed), not at an arbitrary earlier time (it then
    means the board was powered up)."""
    flags &= RESET_FLAGS
    if flags & RCC_CSR_IWDGRSTF:
        return ResetCause(IWDG, "independent watchdog", "the IWDG counted down to 0 (IWDGRSTF): it ran while the "
                          "flash work went on - the hardware watchdog option (WDG_SW=0), or started by an application "
                          "that ran", "run `f4load diagnose` (watchdog line), connect under reset (the default) so "
                          "that no application starts it, and run the same command again", flags)
    if flags & RCC_CSR_WWDGRSTF:
        return ResetCause(WWDG, "window watchdog", "the WWDG (WWDGRSTF) of an application that ran reset the chip",
                          "connect under reset (the default), then run the same command again", flags)
    if flags & RCC_CSR_LPWRRSTF:
        return ResetCause(LOW_POWER, "low-power reset", "entering Stop/Standby with nRST_STOP/nRST_STDBY=0 "
                          "(LPWRRSTF): an application ran", "connect under reset (the default), then run the same "
                          "command again", flags)
    if flags & RCC_CSR_SFTRSTF:
        return ResetCause(SOFTWARE, "software reset", "AIRCR.SYSRESETREQ (SFTRSTF): an application, or another "
                          "debugger on the same chip", "make sure nothing else drives the chip, then run the same "
                          "command again", flags)
    if flags & RCC_CSR_BORRSTF and not flags & RCC_CSR_PORRSTF:
        return ResetCause(BROWN_OUT, "brown-out", "VDD fell below the BOR threshold (BORRSTF without PORRSTF)",
                          f"{SUPPLY_STEP}; then run the same command again", flags)
    if flags & RCC_CSR_PORRSTF:
        if during_work:
            return ResetCause(POWER, "brown-out", "a power-down reset in the middle of the work: VDD fell below "
                              "the power-down threshold (PORRSTF, about 1.7 V), the supply collapsed (with BOR "
                              "off, the factory setting, a brown-out shows this way)",
                              f"{SUPPLY_STEP}; then run the same command again", flags)
        return ResetCause(POWER, "power-on", "an ordinary power-up (PORRSTF with BORRSTF/PINRSTF)", "", flags)
    if flags & RCC_CSR_PINRSTF:
        return ResetCause(PIN, "NRST pin", "something pulled the NRST line low (PINRSTF alone): a button, a "
                          "supervisor chip, the probe's reset line, or noise on NRST",
                          "check the reset circuit (NRST must not be driven by anything else while f4load "
                          "works), then run the same command again", flags)
    return ResetCause(UNKNOWN, "cause unknown", "no RCC_CSR reset flag is set (the core reported the reset in "
                      "DHCSR.S_RESET_ST)", "run `f4load diagnose`, then the same command again", flags)
