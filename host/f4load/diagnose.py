"""`f4load diagnose`: why does this board not erase? One command that looks at everything a debugger can see.

A vendor tool says "Error: failed to erase memory" for read protection, write protection, a watchdog reset, a
brown-out, a flash interface left locked by the application, and a clone chip alike. `diagnose(session)` reads
what tells them apart and returns a `Diagnosis`: a checklist of `Check`s, each with a verdict (ok / warning /
problem), what was read, what it means, and - for a problem - the command that fixes it; the most likely cause
comes first in the summary. Nothing is changed on the target except by the opt-in trial erase.

| check | registers | what a problem means |
|---|---|---|
| identity | DBGMCU_IDCODE, CPUID, F_SIZE, unique ID, ROM table (JEP106) | a clone: its flash may differ |
| supply | probe VDD, requested PSIZE, BOR_LEV | x32 below 2.7 V does not program (RM0090 Table 13) |
| read protection | OPTCR.RDP | level 1 + debugger: no erase or program at all (RM0090 3.7.3) |
| write protection | OPTCR.nWRP | protected sectors fail with WRPERR; a mass erase still works only if none is |
| watchdog | OPTCR.WDG_SW, IWDG_PR/RLR | a hardware IWDG resets the chip in a long erase unless frozen or refreshed |
| reset in Stop/Standby | OPTCR.nRST_STOP/nRST_STDBY | informational |
| flash interface | FLASH_CR.LOCK, a KEYR probe, FLASH_SR | CR locked by a wrong key; sticky SR flags |
| reset causes | RCC_CSR | IWDG, brown-out, pin, software resets since the flags were last cleared |
| trial erase | one sector, through the stub | the exact FLASH_SR bits, the time against DS8626, a reset during it |

Under reset (the default connection) the application has not run: the effects it has on the flash interface
(sticky flags, a wrong key, a started IWDG) are invisible; `--attach` looks at the running target instead.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from pyocd.core import exceptions as pyocd_errors

from f4load import protocol, stream
from f4load.errors import LinkError, StubError
from f4load.floor import PSIZE_NAMES, erase_range_seconds
from f4load.identity import REV_NAMES, describe_jep106
from f4load.option_bytes import sector_ranges
from f4load.part import KB
from f4load.registers import (
    CPUID_CORTEX_M4_R0P1,
    FLASH_CR,
    FLASH_CR_LOCK,
    FLASH_KEY1,
    FLASH_KEY2,
    FLASH_KEYR,
    FLASH_SR,
    FLASH_SR_BSY,
    FLASH_SR_ERRORS,
    IWDG_PR,
    IWDG_RLR,
    LSI_HZ,
    RCC_CSR,
    RCC_CSR_BORRSTF,
    RCC_CSR_IWDGRSTF,
    RCC_CSR_LPWRRSTF,
    RCC_CSR_PINRSTF,
    RCC_CSR_PORRSTF,
    RCC_CSR_SFTRSTF,
    RCC_CSR_WWDGRSTF,
)
from f4load.session import RESET_FLAGS, Session, reset_flag_names

OK, WARNING, PROBLEM = "ok", "warning", "problem"
VERDICT_RANK = {OK: 0, WARNING: 1, PROBLEM: 2}
# Voltage each parallelism needs (RM0090 Table 13).
PSIZE_MIN_VDD = {protocol.PSIZE_X8: 1.8, protocol.PSIZE_X16: 2.1, protocol.PSIZE_X32: 2.7}
PSIZE_BY_NAME = {name: psize for psize, name in PSIZE_NAMES.items()}
# How likely each check is the cause of "failed to erase" when it shows a problem (lower: more likely).
LIKELIHOOD = ["read protection", "write protection", "trial erase", "flash interface", "watchdog", "supply",
              "reset causes", "identity", "reset in Stop/Standby"]


@dataclass
class Check:
    """One line of the checklist."""
    name: str
    verdict: str
    summary: str
    details: List[str] = field(default_factory=list)
    fix: Optional[str] = None  # the command that fixes it (problems and some warnings)

    def as_json(self) -> Dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict, "summary": self.summary, "details": self.details,
                "fix": self.fix}


@dataclass
class TrialErase:
    """What happened when one sector was erased on purpose."""
    sector: int
    size: int
    ok: bool
    seconds: Optional[float]           # virtual on the virtual chip, else wall
    typical_s: float
    max_s: float
    sr_names: List[str] = field(default_factory=list)
    code: Optional[int] = None
    reset_flags: Optional[int] = None  # the RCC_CSR reset flags when the chip reset during the erase
    message: str = ""

    def as_json(self) -> Dict[str, Any]:
        return {"sector": self.sector, "size": self.size, "ok": self.ok, "seconds": self.seconds,
                "typical_s": self.typical_s, "max_s": self.max_s, "flash_sr_bits": self.sr_names,
                "code": self.code, "reset": self.reset_flags is not None,
                "reset_causes": reset_flag_names(self.reset_flags or 0), "message": self.message}


@dataclass
class Diagnosis:
    connect: str
    checks: List[Check] = field(default_factory=list)
    registers: Dict[str, int] = field(default_factory=dict)
    trial: Optional[TrialErase] = None

    @property
    def verdict(self) -> str:
        return max((c.verdict for c in self.checks), key=VERDICT_RANK.__getitem__, default=OK)

    @property
    def causes(self) -> List[Check]:
        """Problems first, then warnings, each in order of how often they explain a failed erase."""
        bad = [c for c in self.checks if c.verdict != OK]
        return sorted(bad, key=lambda c: (-VERDICT_RANK[c.verdict], LIKELIHOOD.index(c.name)
                                          if c.name in LIKELIHOOD else len(LIKELIHOOD)))

    @property
    def fix(self) -> Optional[str]:
        return next((c.fix for c in self.causes if c.fix), None)

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def as_json(self) -> Dict[str, Any]:
        return {"connect": self.connect, "verdict": self.verdict, "fix": self.fix,
                "causes": [c.name for c in self.causes], "checks": [c.as_json() for c in self.checks],
                "trial_erase": self.trial.as_json() if self.trial else None,
                "registers": {k: v for k, v in self.registers.items()}}

    def lines(self) -> List[str]:
        marks = {OK: "[ ok      ]", WARNING: "[ warning ]", PROBLEM: "[ problem ]"}
        out = []
        for c in self.checks:
            out.append(f"{marks[c.verdict]} {c.name}: {c.summary}")
            out += [f"              {d}" for d in c.details]
            if c.fix and c.verdict != OK:
                out.append(f"              fix: {c.fix}")
        out.append("")
        causes = self.causes
        if not causes:
            out.append("verdict: ok - nothing found that would stop erasing or programming this chip")
        else:
            first = causes[0]
            out.append(f"verdict: {self.verdict} - most likely cause: {first.name}: {first.summary}")
            for other in causes[1:]:
                out.append(f"  also ({other.verdict}): {other.name}: {other.summary}")
            if self.fix:
                out.append(f"fix: {self.fix}")
        return out


def diagnose(session: Session, psize: Optional[str] = None, trial_sector: Optional[int] = None,
             image_hint: str = "app.bin") -> Diagnosis:
    """Run every check on an open session (module docstring); `psize` is the parallelism the user intends
    ("x32"...), `trial_sector` a sector to erase on purpose (its contents are lost)."""
    assert session.info is not None
    target = session.target
    result = Diagnosis(connect=session.connect_mode)
    regs = result.registers
    # Read first, before anything f4load does clears a flag (the stream clears RCC_CSR with RMVF).
    for name, address in (("RCC_CSR", RCC_CSR), ("FLASH_SR", FLASH_SR), ("FLASH_CR", FLASH_CR),
                          ("IWDG_PR", IWDG_PR), ("IWDG_RLR", IWDG_RLR)):
        regs[name] = int(target.read32(address))
    regs["FLASH_OPTCR"] = session.info.options.optcr
    regs["DBGMCU_IDCODE"] = session.info.idcode
    if session.info.cpuid is not None:
        regs["CPUID"] = session.info.cpuid
    under_reset = session.connect_mode == "under-reset"
    result.checks += [
        _identity(session, trial_sector),
        _supply(session, psize, image_hint),
        _read_protection(session),
        _write_protection(session, image_hint),
        _watchdog(session, regs),
        _low_power_resets(session),
        _flash_interface(session, regs, under_reset, image_hint),
        _reset_causes(regs["RCC_CSR"], under_reset),
    ]
    if trial_sector is not None:
        result.trial = trial_erase(session, trial_sector)
        result.checks.append(_trial_check(session, result.trial, image_hint))
    return result


# --- the checks ------------------------------------------------------------------------------------------

def _identity(session: Session, trial_sector: Optional[int]) -> Check:
    info = session.info
    assert info is not None
    rev = f"revision {info.rev_name}" if info.rev_name else "a revision ST never shipped"
    details = [f"DBGMCU_IDCODE {info.idcode:#010x}: DEV_ID {info.dev_id:#05x} (STM32F405/407/415/417), "
               f"REV_ID {info.rev_id:#06x} ({rev})",
               f"CPUID {info.cpuid:#010x}" + (" (Cortex-M4 r0p1)" if info.cpuid == CPUID_CORTEX_M4_R0P1 else "")
               if info.cpuid is not None else "CPUID not read",
               f"flash {info.part.flash_size // KB} KB ({info.part.name}), unique ID {info.unique_id}",
               f"debug ROM table designed by {describe_jep106(info.rom_designer)}"]
    clone = not info.looks_like_st or (info.cpuid is not None and info.cpuid != CPUID_CORTEX_M4_R0P1)
    if not clone:
        return Check("identity", OK, f"genuine ST {info.part.name}", details)
    reasons = []
    if info.rev_id not in REV_NAMES:
        reasons.append(f"REV_ID {info.rev_id:#06x}")
    if info.rom_designer != (0, 0x20):
        reasons.append(f"ROM table by {describe_jep106(info.rom_designer)}")
    if info.cpuid is not None and info.cpuid != CPUID_CORTEX_M4_R0P1:
        reasons.append(f"CPUID {info.cpuid:#010x}")
    details.append("it claims to be an STM32F407 (DEV_ID 0x413) but its identity is not ST's: a clone (GD32/"
                   "APM32-like). Its flash controller may differ in timing, in the protection bits and in what "
                   "a failed erase looks like; ST's datasheet figures and this checklist may not hold for it")
    sector = 1 if trial_sector is None else trial_sector
    return Check("identity", WARNING, f"not ST silicon ({', '.join(reasons)}): probably a clone", details,
                 fix=f"f4load diagnose --trial-erase {sector} --yes   (checks that its flash erases in the time "
                     "ST specifies; erases that sector)")


def _supply(session: Session, psize: Optional[str], image_hint: str) -> Check:
    info = session.info
    assert info is not None
    options = info.options
    source = {"probe": "measured by the probe", "given": "given with --vdd",
              "assumed": "assumed: the probe does not measure it"}.get(info.vdd_source, info.vdd_source)
    details = [f"VDD {info.vdd:.2f} V ({source}): the widest parallelism it allows is {info.psize_name} "
               "(RM0090 Table 13: x32 from 2.7 V, x16 from 2.1 V, x8 from 1.8 V)",
               f"BOR_LEV {options.bor_level:#04b}: {options.bor_name}"]
    if psize is not None:
        wanted = PSIZE_BY_NAME[psize]
        if wanted > info.psize:
            return Check("supply", PROBLEM,
                         f"{psize} parallelism requested but VDD is {info.vdd:.2f} V: {psize} needs "
                         f"{PSIZE_MIN_VDD[wanted]:.1f} V; erase and program at {psize} do not work (OPERR or "
                         "nothing changes)",
                         details + [f"f4load chooses {info.psize_name} by itself from the measured VDD; in another "
                                    f"tool set the parallelism (\"voltage range\") to {info.psize_name}"],
                         fix=f"f4load {image_hint} --vdd {info.vdd:.1f}   (programs at {info.psize_name}; or raise "
                             "the supply to 2.7 V or more for x32)")
    if info.vdd_source == "assumed":
        return Check("supply", WARNING, f"VDD not measured: assuming {info.vdd:.1f} V ({info.psize_name})", details,
                     fix=f"f4load {image_hint} --vdd VOLTS   (give the real supply if it is below 2.7 V)")
    if options.bor_threshold > info.vdd:
        return Check("supply", PROBLEM, f"the brown-out level ({options.bor_name}) is above VDD {info.vdd:.2f} V: "
                     "the chip is held in or thrown into reset", details,
                     fix="f4load option-bytes --bor off   (or raise the supply)")
    if options.bor_level != 0b11 and info.vdd - options.bor_threshold < 0.1:
        return Check("supply", WARNING, f"VDD {info.vdd:.2f} V is within 0.1 V of the brown-out threshold "
                     f"({options.bor_name}): the erase current peak can trigger a brown-out reset", details)
    return Check("supply", OK, f"{info.vdd:.2f} V, {info.psize_name} parallelism", details)


def _read_protection(session: Session) -> Check:
    options = session.info.options if session.info else None
    assert options is not None
    if options.rdp_level == 0:
        return Check("read protection", OK, f"RDP level 0 (RDP byte {options.rdp:#04x})")
    if options.rdp_level == 2:
        return Check("read protection", PROBLEM, "RDP level 2: permanent; the debug port should not even answer",
                     ["level 2 cannot be undone: the flash can never be erased or programmed over SWD again"])
    return Check("read protection", PROBLEM,
                 f"RDP level 1 (RDP byte {options.rdp:#04x}): with a debugger attached no sector can be erased or "
                 "programmed and flash reads fail (RM0090 3.7.3)",
                 ["every erase and program sets WRPERR, even of sectors whose nWRP bit is 1",
                  "going back to level 0 mass-erases the whole flash (all of it is lost), then programming works"],
                 fix="f4load rdp 0   (mass-erases the whole flash)")


def _write_protection(session: Session, image_hint: str) -> Check:
    info = session.info
    assert info is not None
    options = info.options
    protected = options.write_protected(info.part)
    if not protected:
        return Check("write protection", OK, f"no sector write-protected (nWRP {options.nwrp:#05x})")
    ranges = sector_ranges(protected)
    return Check("write protection", PROBLEM,
                 f"sectors {ranges} write-protected (nWRP {options.nwrp:#05x}: a 0 bit protects its sector)",
                 [f"erasing or programming sector{'s' if len(protected) > 1 else ''} {ranges} fails with WRPERR "
                  "and changes nothing (RM0090 3.7.1); other sectors erase normally",
                  "a vendor tool says \"failed to erase memory\" for these sectors only"],
                 fix=f"f4load unprotect {ranges}   (then f4load {image_hint})")


def _watchdog(session: Session, regs: Dict[str, int]) -> Check:
    info = session.info
    assert info is not None
    timeout_s = 4 * (1 << (regs["IWDG_PR"] & 7)) * ((regs["IWDG_RLR"] & 0xFFF) + 1) / LSI_HZ
    longest = max(erase_range_seconds(s, info.psize)[1] for s in info.part.sectors)
    if info.options.software_watchdog:
        return Check("watchdog", OK, "WDG_SW=1: software watchdog (the IWDG runs only if the application starts it)")
    return Check("watchdog", PROBLEM,
                 f"WDG_SW=0: hardware watchdog, the IWDG runs from every reset; timeout {timeout_s * 1000:.0f} ms "
                 f"against up to {longest:.1f} s for one sector erase",
                 ["a flash algorithm that neither freezes it (DBGMCU_APB1_FZ.DBG_IWDG_STOP, only while the core "
                  "is halted) nor refreshes it is cut off by a reset in the middle of an erase (RCC_CSR IWDGRSTF)",
                  "f4load freezes and refreshes it; other tools may not"],
                 fix="f4load option-bytes --wdg sw   (the application can still start the IWDG itself)")


def _low_power_resets(session: Session) -> Check:
    options = session.info.options if session.info else None
    assert options is not None
    text = (f"nRST_STOP={0 if options.reset_on_stop else 1}, nRST_STDBY={0 if options.reset_on_standby else 1}: "
            f"{'reset' if options.reset_on_stop else 'no reset'} on entering Stop, "
            f"{'reset' if options.reset_on_standby else 'no reset'} on entering Standby")
    return Check("reset in Stop/Standby", OK, text)


def _flash_interface(session: Session, regs: Dict[str, int], under_reset: bool, image_hint: str) -> Check:
    sr, cr = regs["FLASH_SR"], regs["FLASH_CR"]
    details = [f"FLASH_SR {sr:#010x}, FLASH_CR {cr:#010x}"]
    if under_reset:
        details.append("connected under reset: the application has not run, so what it does to the flash interface "
                       "(sticky flags, a wrong key, starting the IWDG) cannot be seen; `f4load diagnose --attach` "
                       "looks at the running target")
    problems = []
    sticky = sr & FLASH_SR_ERRORS
    if sticky:
        names = ", ".join(protocol.sr_bit_names(sticky))
        problems.append(f"error flags {names} left set in FLASH_SR: they are sticky (RM0090 3.7.4) and a loader "
                        "that does not clear them has its first operation refused")
    key_locked = cr & FLASH_CR_LOCK and not sr & FLASH_SR_BSY and _cr_key_refused(session)
    if key_locked:
        problems.append("FLASH_CR is locked by a wrong key: the KEYR unlock sequence is a bus error, and stays one "
                        "until the next reset (RM0090 3.5.1)")
    elif not cr & FLASH_CR_LOCK:
        details.append("FLASH_CR is unlocked (the application left it so)")
    if not problems:
        return Check("flash interface", OK, "FLASH_CR locked as after reset, no error flag in FLASH_SR", details)
    return Check("flash interface", PROBLEM, "; ".join(problems), details,
                 fix=f"f4load {image_hint}   (connects under reset, which clears both, and clears stale flags "
                     "before the first operation)")


def _cr_key_refused(session: Session) -> bool:
    """Try the FLASH_KEYR unlock sequence: a bus error means CR is locked by a wrong key since reset. A
    successful unlock is undone at once (LOCK=1)."""
    target = session.target
    try:
        target.write32(FLASH_KEYR, FLASH_KEY1)
        target.write32(FLASH_KEYR, FLASH_KEY2)
        locked = bool(target.read32(FLASH_CR) & FLASH_CR_LOCK)
    except pyocd_errors.TransferFaultError:
        return True
    if not locked:
        target.write32(FLASH_CR, FLASH_CR_LOCK)
    return locked


RESET_MEANINGS = {
    RCC_CSR_IWDGRSTF: "the independent watchdog reset the chip: during an erase that means the IWDG ran while the "
                      "flash algorithm worked (hardware watchdog option, or started by the application)",
    RCC_CSR_WWDGRSTF: "the window watchdog reset the chip (the application's)",
    RCC_CSR_LPWRRSTF: "a low-power reset: the application entered Stop/Standby with nRST_STOP/nRST_STDBY=0",
    RCC_CSR_SFTRSTF: "a software reset (the application, or a debugger's SYSRESETREQ)",
}


def _reset_causes(csr: int, under_reset: bool) -> Check:
    flags = csr & RESET_FLAGS
    names = reset_flag_names(flags)
    details = [f"RCC_CSR {csr:#010x}: {', '.join(names) or 'no'} reset flags since they were last cleared"]
    if flags & RCC_CSR_PINRSTF:
        details.append("NRST pin: " + ("f4load's own connect under reset" if under_reset else
                                       "the reset line was pulled (a button, a supervisor, the board holding it)"))
    if flags & RCC_CSR_PORRSTF:
        details.append("power-on/power-down: the chip was powered up since the flags were last cleared (normal)")
    warnings = [text for bit, text in RESET_MEANINGS.items() if flags & bit]
    if flags & RCC_CSR_BORRSTF and not flags & RCC_CSR_PORRSTF:
        warnings.append("a brown-out without a power-on: VDD dipped below the BOR threshold while running (a weak "
                        "supply, or missing VCAP1/VCAP2 capacitors making the core supply sag)")
    if flags & RCC_CSR_PINRSTF and not under_reset:
        warnings.append("the NRST pin reset the chip: something on the board pulled the reset line")
    if warnings:
        return Check("reset causes", WARNING, "; ".join(warnings), details)
    return Check("reset causes", OK, ", ".join(names) or "no reset flags", details)


# --- the trial erase -------------------------------------------------------------------------------------

def trial_erase(session: Session, index: int) -> TrialErase:
    """Erase sector `index` through the stub (even if blank) and report what happened (destroys its data)."""
    info = session.info
    assert info is not None
    sector = session._sectors([index])[0]
    typical, maximum = erase_range_seconds(sector, info.psize)
    trial = TrialErase(sector=index, size=sector.size, ok=False, seconds=None, typical_s=typical, max_s=maximum)
    start = session.virtual_now()
    wall = _wall()
    try:
        report = session.run([stream.EraseSector(index)])
        trial.ok = True
        trial.message = "erased"
        del report
    except StubError as error:
        trial.sr_names, trial.code = error.sr_names, error.code
        trial.message = " ".join(str(error).split())
    except LinkError as error:
        cause = error.__cause__
        flags = getattr(cause, "reset_flags", None)
        trial.reset_flags = int(flags) if flags is not None else 0
        trial.message = " ".join(str(error).split())
    end = session.virtual_now()
    trial.seconds = end - start if end is not None and start is not None else _wall() - wall
    return trial


def _wall() -> float:
    return time.monotonic()


def _trial_check(session: Session, trial: TrialErase, image_hint: str) -> Check:
    info = session.info
    assert info is not None
    took = f"{trial.seconds:.3f} s" if trial.seconds is not None else "unknown time"
    details = [f"sector {trial.sector} ({trial.size // KB} KB) at {info.psize_name}: DS8626 Table 40 gives "
               f"{trial.typical_s:g} s typical, {trial.max_s:g} s maximum; this one took {took}"]
    if trial.ok:
        slow = trial.seconds is not None and trial.seconds > trial.max_s * 1.05
        if slow:
            return Check("trial erase", WARNING, f"sector {trial.sector} erased, but slower than the datasheet "
                         f"maximum ({took}): worn or non-ST flash", details)
        return Check("trial erase", OK, f"sector {trial.sector} erased in {took}", details)
    if trial.reset_flags is not None:
        names = reset_flag_names(trial.reset_flags)
        details.append(trial.message)
        if trial.reset_flags & RCC_CSR_IWDGRSTF:
            return Check("trial erase", PROBLEM, f"the chip reset during the erase of sector {trial.sector}: "
                         "independent watchdog", details, fix="f4load option-bytes --wdg sw")
        if trial.reset_flags & RCC_CSR_BORRSTF:
            details.append("the erase current peak pulled VDD below the brown-out/power-down threshold: check the "
                           "supply's current capability and its decoupling, and the VCAP1/VCAP2 capacitors "
                           "(2.2 uF each, DS8626)")
            return Check("trial erase", PROBLEM, f"the chip reset during the erase of sector {trial.sector} "
                         f"after {took}: brown-out ({', '.join(names)})", details,
                         fix=f"fix the supply, then f4load diagnose --trial-erase {trial.sector} --yes")
        what = ", ".join(names) or "cause unknown (no RCC_CSR flag)"
        hint = " (a reset line held or pulsed by the board)" if trial.reset_flags & RCC_CSR_PINRSTF else ""
        return Check("trial erase", PROBLEM, f"the chip reset during the erase of sector {trial.sector}: {what}{hint}",
                     details)
    details.append(trial.message)
    bits = ", ".join(trial.sr_names) or "no FLASH_SR bit"
    fix = None
    if "WRPERR" in trial.sr_names and info.options.rdp_level == 1:
        fix = "f4load rdp 0   (mass-erases the whole flash)"
    elif "WRPERR" in trial.sr_names and trial.sector in info.options.write_protected(info.part):
        fix = f"f4load unprotect {trial.sector}"
    return Check("trial erase", PROBLEM, f"the erase of sector {trial.sector} failed: {bits}", details, fix=fix)
