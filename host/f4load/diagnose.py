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
from typing import Any, Dict, List, Optional, Tuple

from pyocd.core import exceptions as pyocd_errors

from f4load import protocol, reset_causes, stream
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
    RCC_CSR_PINRSTF,
)
from f4load.session import PSIZE_BY_NAME, PSIZE_MIN_VDD, RESET_FLAGS, Session, reset_flag_names

OK, WARNING, PROBLEM = "ok", "warning", "problem"
VERDICT_RANK = {OK: 0, WARNING: 1, PROBLEM: 2}
# Voltage each parallelism needs (RM0090 Table 13).
# How likely each check is the cause of "failed to erase" when it shows a problem (lower: more likely).
LIKELIHOOD = ["read protection", "write protection", "trial erase", "recent runs", "flash interface", "watchdog",
              "supply", "reset causes", "identity", "CRC unit", "reset in Stop/Standby"]
# DS8626 LSI oscillator: 17 kHz minimum, 47 kHz maximum (32 kHz typical): an IWDG timeout is a range.
LSI_MIN_HZ, LSI_MAX_HZ = 17_000, 47_000
IWDG_PR_RESET, IWDG_RLR_RESET = 0, 0xFFF


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
    bsy_stuck_ms: Optional[int] = None  # BSY never cleared: how long the stub waited (its own clock)
    kind: Optional[str] = None  # the stub's result kind when it reported a failure (FLASH_ERROR, BAD_FLASH_SIZE...)
    psize: int = protocol.PSIZE_X32
    retry: Optional[TrialErase] = None  # the same erase once more at x8, after a failure that the supply explains
    confirm: Optional[TrialErase] = None  # and, when x8 passed, once more at the first width: a one-off dip or not

    @property
    def psize_name(self) -> str:
        return PSIZE_NAMES[self.psize]

    @property
    def supply_suspect(self) -> bool:
        """A failure a supply sagging under the erase current explains: a reset that is neither a watchdog nor
        software, or OPERR."""
        if self.reset_flags is not None:
            return reset_causes.classify(self.reset_flags).key in reset_causes.SUPPLY_CAUSES + (
                reset_causes.PIN, reset_causes.UNKNOWN)
        return "OPERR" in self.sr_names

    def as_json(self) -> Dict[str, Any]:
        return {"sector": self.sector, "size": self.size, "psize": self.psize_name, "ok": self.ok,
                "seconds": self.seconds, "typical_s": self.typical_s, "max_s": self.max_s,
                "flash_sr_bits": self.sr_names, "code": self.code, "reset": self.reset_flags is not None,
                "bsy_stuck_ms": self.bsy_stuck_ms, "reset_causes": reset_flag_names(self.reset_flags or 0),
                "message": self.message, "retry": self.retry.as_json() if self.retry else None,
                "confirm": self.confirm.as_json() if self.confirm else None}


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
        """Problems first, then warnings, each in order of how often they explain a failed erase; an identity
        the session could not trust (identity_problems) explains everything else and comes first."""
        bad = [c for c in self.checks if c.verdict != OK]

        def rank(c: Check) -> Tuple[int, int]:
            if c.name == "identity" and c.verdict == PROBLEM:
                return (-VERDICT_RANK[c.verdict], -1)
            return (-VERDICT_RANK[c.verdict], LIKELIHOOD.index(c.name) if c.name in LIKELIHOOD else len(LIKELIHOOD))
        return sorted(bad, key=rank)

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
        _recent_runs(session, image_hint),
        _crc_unit(session),
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
    if info.identity_problems:
        details.append(f"the other checks go on with the {info.part.name}'s sector map ({info.part.flash_size // KB} "
                       "KB) assumed; f4load refuses to program this part (exit 3): without a trustworthy identity "
                       "it cannot know the sector map, and the stub refuses it too (BAD_FLASH_SIZE)")
        details.append("a genuine ST part reads its F_SIZE and DEV_ID from a factory page that never changes: a "
                       "wrong value means clone silicon or a damaged part; replace it with a genuine STM32F405/407")
        return Check("identity", PROBLEM, "; ".join(info.identity_problems), details)
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


def iwdg_timeout_range(prescaler: int, reload: int) -> Tuple[float, float, float]:
    """(shortest, nominal, longest) IWDG timeout in seconds for PR/RLR: 4 * 2^PR * (RLR + 1) LSI periods
    (RM0090 19.3), the LSI anywhere from 47 kHz down to 17 kHz (DS8626), 32 kHz nominal."""
    ticks = 4 * (1 << (prescaler & 7)) * ((reload & 0xFFF) + 1)
    return ticks / LSI_MAX_HZ, ticks / LSI_HZ, ticks / LSI_MIN_HZ


def _watchdog(session: Session, regs: Dict[str, int]) -> Check:
    info = session.info
    assert info is not None
    prescaler, reload = regs["IWDG_PR"] & 7, regs["IWDG_RLR"] & 0xFFF
    shortest, nominal, longest_s = iwdg_timeout_range(prescaler, reload)
    timing = (f"IWDG_PR {prescaler} (/{4 << prescaler}), IWDG_RLR {reload:#05x}: timeout {nominal * 1000:.0f} ms at "
              f"32 kHz, {shortest * 1000:.0f}-{longest_s * 1000:.0f} ms over the LSI's 17-47 kHz (DS8626)")
    longest = max(erase_range_seconds(s, info.psize)[1] for s in info.part.sectors)
    if info.options.software_watchdog:
        configured = (prescaler, reload) != (IWDG_PR_RESET, IWDG_RLR_RESET)
        if session.connect_mode != "under-reset" and configured:
            return Check("watchdog", WARNING,
                         f"the application started the IWDG: timeout {shortest * 1000:.0f}-{longest_s * 1000:.0f} ms "
                         f"(LSI 17-47 kHz), against up to {longest:.1f} s for one sector erase",
                         [timing, "IWDG_PR/RLR are not their reset values (/4, 0xFFF): the application wrote them, "
                          "which it does when it starts the IWDG; once started it cannot be stopped, only reset "
                          "(RM0090 19.3)",
                          "f4load freezes it while the core is halted and the stub refreshes it; a tool that does "
                          "neither is cut off by a reset in the middle of an erase (RCC_CSR IWDGRSTF)",
                          "connecting under reset (f4load's default) stops it before the application can start it"],
                         fix="f4load app.bin   (connects under reset: the application never starts the IWDG)")
        return Check("watchdog", OK, "WDG_SW=1: software watchdog (the IWDG runs only if the application starts it)",
                     [timing] if session.connect_mode != "under-reset" else [])
    return Check("watchdog", PROBLEM,
                 f"WDG_SW=0: hardware watchdog, the IWDG runs from every reset; timeout {nominal * 1000:.0f} ms "
                 f"({shortest * 1000:.0f}-{longest_s * 1000:.0f} ms over the LSI's range) against up to "
                 f"{longest:.1f} s for one sector erase",
                 [timing, "a flash algorithm that neither freezes it (DBGMCU_APB1_FZ.DBG_IWDG_STOP, only while the "
                  "core is halted) nor refreshes it is cut off by a reset in the middle of an erase (RCC_CSR "
                  "IWDGRSTF)",
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


def _reset_causes(csr: int, under_reset: bool) -> Check:
    """RCC_CSR's flags since they were last cleared, in RM0090's terms (f4load.reset_causes): connected under
    reset, PINRSTF is f4load's own reset; PORRSTF (with BORRSTF, PINRSTF) is a power-up."""
    flags = csr & RESET_FLAGS
    names = reset_causes.flag_names(flags)
    details = [f"RCC_CSR {csr:#010x}: {', '.join(names) or 'no'} reset flags since they were last cleared"]
    significant = flags & ~RCC_CSR_PINRSTF if under_reset else flags
    if under_reset and flags & RCC_CSR_PINRSTF:
        details.append("PINRSTF: f4load's own connect under reset")
    if not significant:
        return Check("reset causes", OK, ", ".join(names) or "no reset flags", details)
    cause = reset_causes.classify(significant, during_work=False)
    details.append(f"{cause.name}: {cause.meaning}")
    if cause.key == reset_causes.POWER:
        return Check("reset causes", OK, "power-on: an ordinary power-up", details)
    return Check("reset causes", WARNING, f"{cause.name}: {cause.meaning}", details)


def _crc_unit(session: Session) -> Check:
    """The known-answer check of the CRC unit (Session.crc_unit), which f4load's verify and skip-unchanged rely
    on. Not with --attach: the application may be using the unit, and the check needs the core halted."""
    if session.connect_mode == "attach":
        return Check("CRC unit", OK, "not checked: the application runs (--attach); the default connection checks it")
    result = session.crc_unit()
    if result.ok:
        return Check("CRC unit", OK, "the known-answer check passes", [result.describe()])
    return Check("CRC unit", WARNING, "the CRC unit fails its known-answer check: a clone without ST's CRC unit, or "
                 "a damaged part",
                 [result.describe(),
                  "f4load notices and checks the flash by reading it back (slower, still correct); a tool that "
                  "verifies by the chip's CRC reports mismatches on a correctly programmed flash"])


def _recent_runs(session: Session, image_hint: str) -> Check:
    """What the run journal (f4load.journal) says about this chip: the failures since its last good run."""
    log = session.run_journal()
    entries = log.entries() if log is not None else []
    failures = log.recent_failures() if log is not None else []
    if not failures:
        return Check("recent runs", OK, f"no failure since the last good run ({len(entries)} runs in the journal)"
                     if entries else "no runs recorded for this chip yet")
    details = [f"{e.time} {e.command}: {e.what_happened()}"
               + (f" (RCC_CSR then: {', '.join(reset_causes.flag_names(e.reset_flags))})" if e.reset_flags else "")
               + (f" at {e.psize}" if e.psize else "") for e in failures[-5:]]
    kinds = {(e.outcome, e.reset_cause, e.kind, e.sector) for e in failures}
    count = len(failures)
    runs = "the last run was" if count == 1 else f"the last {count} runs were"
    last = failures[-1]
    if len(kinds) == 1:
        summary = f"{runs} {last.what_happened()}"
    else:
        summary = f"{runs} failures, the latest {last.what_happened()}"
    fix = None
    if last.outcome == "reset" and last.reset_cause in reset_causes.SUPPLY_CAUSES:
        details.append("a reset with the supply flags in the middle of an erase or a program is the supply "
                       "collapsing under the flash's current: " + reset_causes.SUPPLY_STEP)
        fix = (f"check the supply and the VCAP1/VCAP2 capacitors; meanwhile f4load {image_hint} --psize x8   "
               "(x8 draws less current than x32)")
    elif last.outcome == "reset" and last.reset_flags is not None:
        details.append(reset_causes.classify(last.reset_flags).next_step)
    elif last.outcome == "flash error" and last.sr_bits:
        details.append(f"FLASH_SR {', '.join(last.sr_bits)} (see the other lines for protection or sticky flags)")
    details.append(f"journal: {log.path if log is not None else '-'}")
    return Check("recent runs", PROBLEM, summary, details, fix=fix)


# --- the trial erase -------------------------------------------------------------------------------------

def trial_erase(session: Session, index: int) -> TrialErase:
    """Erase sector `index` through the stub (even if blank) at the session's parallelism - the widest the
    supply allows unless one was asked for - and report what happened (destroys its data). When that fails in
    a way the supply explains (a reset, OPERR), erase it once more at x8: an x8 erase draws the least current
    (DS8626). When x8 passes, once more at the first width: failing again there, the board cannot deliver the
    wider erase's current; passing, the first failure was a one-off dip."""
    info = session.info
    assert info is not None
    trial = _erase_once(session, index, info.psize)
    if not trial.ok and trial.supply_suspect and info.psize != protocol.PSIZE_X8:
        trial.retry = _erase_once(session, index, protocol.PSIZE_X8)
        if trial.retry.ok:
            trial.confirm = _erase_once(session, index, info.psize)
    return trial


def _erase_once(session: Session, index: int, psize: int) -> TrialErase:
    sector = session._sectors([index])[0]
    typical, maximum = erase_range_seconds(sector, psize)
    trial = TrialErase(sector=index, size=sector.size, ok=False, seconds=None, typical_s=typical, max_s=maximum,
                       psize=psize)
    start = session.virtual_now()
    wall = _wall()
    try:
        with session.journaled("trial erase"):
            session.run([stream.EraseSector(index)], psize=psize)
        trial.ok = True
        trial.message = "erased"
    except StubError as error:
        trial.sr_names, trial.code, trial.kind = error.sr_names, error.code, error.kind
        trial.message = " ".join(str(error).split())
        if error.kind == "BSY_TIMEOUT" and error.record is not None:
            trial.bsy_stuck_ms = error.record.waited_ms
    except LinkError as error:
        cause = error.__cause__
        flags = getattr(cause, "reset_flags", None)
        trial.reset_flags = int(flags) if flags is not None else 0
        trial.message = str(error).splitlines()[0]
    end = session.virtual_now()
    trial.seconds = end - start if end is not None and start is not None else _wall() - wall
    if trial.bsy_stuck_ms is not None:
        trial.seconds = trial.bsy_stuck_ms / 1000  # the stub's own time: loading the stub is not the erase's
    return trial


def _wall() -> float:
    return time.monotonic()


def _attempt_text(trial: TrialErase) -> str:
    """"erased in 0.251 s", "reset the chip (brown-out)", "failed with OPERR"."""
    if trial.ok:
        return f"erased in {trial.seconds:.3f} s" if trial.seconds is not None else "erased"
    if trial.reset_flags is not None:
        return f"reset the chip ({reset_causes.classify(trial.reset_flags).name})"
    return f"failed with {', '.join(trial.sr_names) or 'no FLASH_SR bit'}"


def _supply_verdict(trial: TrialErase, details: List[str], image_hint: str) -> Check:
    """The first erase failed as a weak supply makes it fail, and was tried again at x8."""
    retry = trial.retry
    assert retry is not None
    wide = trial.psize_name
    details += [f"at {wide}: {_attempt_text(trial)}; once more at x8: {_attempt_text(retry)} "
                f"(DS8626 Table 40 at x8: {retry.typical_s:g} s typical, {retry.max_s:g} s maximum)"]
    if trial.reset_flags is not None:
        details.append(reset_causes.classify(trial.reset_flags).describe())
    confirm = trial.confirm
    if retry.ok and confirm is not None and confirm.ok:
        details.append(f"once more at {wide}: {_attempt_text(confirm)}: the first failure did not come back")
        return Check("trial erase", PROBLEM, f"the chip reset once during the erase of sector {trial.sector} at "
                     f"{wide} ({_attempt_text(trial)}), then erased at x8 and again at {wide}: an intermittent "
                     "supply dip", details,
                     fix=f"fix the supply, then f4load diagnose --trial-erase {trial.sector} --yes   (check the "
                         "supply's current capability and the VCAP1/VCAP2 capacitors, 2.2 uF each)")
    if retry.ok:
        if confirm is not None:
            details.append(f"once more at {wide}: {_attempt_text(confirm)} again")
        details.append(f"the program/erase current grows with the parallelism (DS8626: about 12 mA at x32, 8 mA at "
                       f"x16, 5 mA at x8): a supply whose voltage sags under the {wide} current resets the chip or "
                       "fails the operation (OPERR), and gets through at x8")
        return Check("trial erase", PROBLEM, f"the supply cannot deliver the {wide} erase current: the erase of "
                     f"sector {trial.sector} {_attempt_text(trial)} at {wide} and passed at x8", details,
                     fix=f"fix the supply (its current capability, its wiring) and the VCAP1/VCAP2 capacitors (2.2 "
                         f"uF each, DS8626); meanwhile f4load {image_hint} --psize x8   (slower, less current)")
    details += [trial.message, retry.message]
    return Check("trial erase", PROBLEM, f"the erase of sector {trial.sector} fails at {wide} and at x8: "
                 f"{_attempt_text(retry)}", details,
                 fix="check the supply and the VCAP1/VCAP2 capacitors (2.2 uF each, DS8626); then f4load diagnose "
                     f"--trial-erase {trial.sector} --yes again")


def _trial_check(session: Session, trial: TrialErase, image_hint: str) -> Check:
    info = session.info
    assert info is not None
    took = f"{trial.seconds:.3f} s" if trial.seconds is not None else "unknown time"
    details = [f"sector {trial.sector} ({trial.size // KB} KB) at {trial.psize_name}: DS8626 Table 40 gives "
               f"{trial.typical_s:g} s typical, {trial.max_s:g} s maximum; this one took {took}"]
    if trial.retry is not None:
        return _supply_verdict(trial, details, image_hint)
    if trial.ok:
        slow = trial.seconds is not None and trial.seconds > trial.max_s * 1.05
        if slow:
            return Check("trial erase", WARNING, f"sector {trial.sector} erased, but slower than the datasheet "
                         f"maximum ({took}): worn or non-ST flash", details)
        return Check("trial erase", OK, f"sector {trial.sector} erased in {took}", details)
    if trial.reset_flags is not None:
        details.append(trial.message)
        cause = reset_causes.classify(trial.reset_flags, during_work=True)
        details.append(cause.describe())
        if cause.key == reset_causes.IWDG:
            return Check("trial erase", PROBLEM, f"the chip reset during the erase of sector {trial.sector}: "
                         "independent watchdog", details, fix="f4load option-bytes --wdg sw")
        if cause.supply:
            details.append(reset_causes.SUPPLY_STEP)
            return Check("trial erase", PROBLEM, f"the chip reset during the erase of sector {trial.sector} "
                         f"after {took}: {cause.name}", details,
                         fix=f"fix the supply, then f4load diagnose --trial-erase {trial.sector} --yes")
        return Check("trial erase", PROBLEM, f"the chip reset during the erase of sector {trial.sector}: "
                     f"{cause.name}", details, fix=cause.next_step or None)
    details.append(trial.message)
    if trial.bsy_stuck_ms is not None:
        details.append("FLASH_SR.BSY never cleared: the flash interface started the erase and never finished it; "
                       "the stub gave up after its own timeout (twice the DS8626 maximum). Only a reset clears BSY. "
                       "On an ST part this is damaged flash or a supply problem; on a clone, a different controller")
        return Check("trial erase", PROBLEM, f"the erase of sector {trial.sector} never completed: FLASH_SR.BSY stayed "
                     f"set for {trial.bsy_stuck_ms} ms (the stub's own time) against {trial.max_s:g} s maximum",
                     details, fix="power-cycle the board, then f4load diagnose --trial-erase "
                                  f"{trial.sector} --yes again; if BSY sticks again the chip's flash is damaged")
    if trial.kind not in (None, "FLASH_ERROR"):
        what = trial.message.split(" [")[0]
        return Check("trial erase", PROBLEM, f"the erase of sector {trial.sector} did not run: {what}", details)
    bits = ", ".join(trial.sr_names) or "no FLASH_SR bit"
    fix = None
    if "WRPERR" in trial.sr_names and info.options.rdp_level == 1:
        fix = "f4load rdp 0   (mass-erases the whole flash)"
    elif "WRPERR" in trial.sr_names and trial.sector in info.options.write_protected(info.part):
        fix = f"f4load unprotect {trial.sector}"
    return Check("trial erase", PROBLEM, f"the erase of sector {trial.sector} failed: {bits}", details, fix=fix)
