"""Fault injection for the virtual STM32F407: one data class, read by the chip model.

`Faults` says what is wrong with the virtual board. The chip model (chip.py, flash.py, probe.py) reads its
fields; nothing else decides how a fault behaves. This module only describes, validates, parses and prints
faults. The field names are the contract with chip.py and flash.py (docs/sim.md).

Three forms, all equivalent:

* the data class itself (Python API, tests);
* a JSON object with the field names as keys (`faults.json` in the state directory, `to_dict`/`from_dict`);
* a compact text form for the command line and the `F4LOAD_SIM_FAULTS` environment variable: items separated
  by white space or `;`, each `name` or `name=value`, for example
  `"wrp=0-3 rdp1 iwdg=5ms sticky=PGSERR,PGPERR reset=erase:3:middle:brownout"`.

Applying text to an existing `Faults` adds to it: sector lists and SR bits are merged, `reset=` items are
appended, and single values (`iwdg=`, `vdd=`, ...) replace the old value. The user documentation of every fault
(what a real board would show) is docs/faults.md; `FAULT_KINDS` below is the table the CLI prints.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple, Union

from f4load import registers as reg
from f4load.part import KB, sectors_for

# Environment variable with extra faults (text form), applied on top of the state directory's faults.json.
FAULTS_ENV = "F4LOAD_SIM_FAULTS"

RESET_OPERATIONS = ("erase", "program")
RESET_PHASES = ("start", "middle")
RESET_CAUSES = ("brownout", "pin", "iwdg")

# FLASH_SR error bits an application can leave behind (RM0090 3.8.4). EOP is not an error and BSY is not
# writable, so neither can be "sticky" in this sense.
STICKY_SR_BITS: Dict[str, int] = {
    "OPERR": reg.FLASH_SR_OPERR,
    "WRPERR": reg.FLASH_SR_WRPERR,
    "PGAERR": reg.FLASH_SR_PGAERR,
    "PGPERR": reg.FLASH_SR_PGPERR,
    "PGSERR": reg.FLASH_SR_PGSERR,
}

# IWDG timeouts the hardware can express: LSI 32 kHz, prescaler /4../256, RLR 0..4095 (RM0090 19.3.3).
# One LSI period times 4 is the shortest, 4096 * 256 / 32 kHz = 32.768 s the longest.
IWDG_MIN_MS = 4 * 1000 / reg.LSI_HZ
IWDG_MAX_MS = 4096 * 256 * 1000 / reg.LSI_HZ

# DS8626 table 14 (general operating conditions): VDD 1.8 V to 3.6 V.
VDD_MIN = 1.8
VDD_MAX = 3.6

# DS8626 (LSI oscillator characteristics): f_LSI 17 kHz min, 32 kHz typ, 47 kHz max. The IWDG counts
# LSI periods, so its real timeout is the nominal one times 32 kHz / f_LSI.
LSI_MIN_HZ = 17_000
LSI_MAX_HZ = 47_000

FLASH_SIZES_KB = (512, 1024)

# weak-supply: a source resistance up to 1 kohm (beyond that nothing would run at all).
SUPPLY_RESISTANCE_MAX = 1000.0


class FaultSpecError(ValueError):
    """A fault description that cannot be understood or is out of range. The message is one line."""


@dataclass
class ResetDuring:
    """Reset the chip during the `nth` (1-based, counted since the session opened) flash operation."""
    operation: str  # "erase" (sector or mass) or "program" (one program write)
    nth: int = 1
    phase: str = "middle"  # "start" (nothing done yet) or "middle" (half done)
    cause: str = "brownout"  # "brownout" (BORRSTF|PORRSTF), "pin" (PINRSTF), "iwdg" (IWDGRSTF)

    def validate(self) -> None:
        if self.operation not in RESET_OPERATIONS:
            raise FaultSpecError(f"reset: operation {self.operation!r} is not one of {', '.join(RESET_OPERATIONS)}")
        if isinstance(self.nth, bool) or not isinstance(self.nth, int) or self.nth < 1:
            raise FaultSpecError(f"reset: operation count {self.nth!r} must be a whole number >= 1")
        if self.phase not in RESET_PHASES:
            raise FaultSpecError(f"reset: phase {self.phase!r} is not one of {', '.join(RESET_PHASES)}")
        if self.cause not in RESET_CAUSES:
            raise FaultSpecError(f"reset: cause {self.cause!r} is not one of {', '.join(RESET_CAUSES)}")

    def to_text(self) -> str:
        return f"{self.operation}:{self.nth}:{self.phase}:{self.cause}"


@dataclass
class Faults:
    # --- persistent chip conditions (applied to option bytes at power-on) ---
    write_protected: List[int] = field(default_factory=list)  # sectors whose nWRP bit is 0
    rdp_level1: bool = False
    hardware_watchdog: bool = False  # WDG_SW = 0: IWDG runs from reset
    # --- what "the application" does when it runs (at power-on, and after any reset that lets it run) ---
    iwdg_timeout_ms: Optional[float] = None  # the app starts the IWDG with this timeout (PR/RLR chosen to fit)
    sticky_sr: int = 0  # FLASH_SR error bits the application left set
    cr_locked_by_bad_key: bool = False  # the application wrote a wrong key to FLASH_KEYR
    # --- flash interface misbehaviour ---
    bsy_stuck: bool = False  # BSY never clears after STRT/program
    reset_during: List[ResetDuring] = field(default_factory=list)
    # --- link and board ---
    disconnect_after_commands: Optional[int] = None  # probe commands after which the link is lost
    supply_voltage: float = 3.3  # what the probe measures on VDD (TVCC); below 2.7 V x32 is out of spec
    flash_kb: int = 512  # 512 (xE) or 1024 (xG)
    clone: bool = False  # identity of a non-ST part claiming to be an F407
    max_timing: bool = False  # use DS8626 maximum erase/program times instead of typical
    lsi_hz: int = reg.LSI_HZ  # the LSI frequency that clocks the IWDG (17-47 kHz; firmware assumes 32 kHz)
    supply_resistance_ohm: Optional[float] = None  # a weak supply: VDD sags by R x the program/erase current
    crc_broken: bool = False  # the CRC unit computes a wrong value (a clone's, or a damaged one)
    f_size_kb: Optional[int] = None  # what F_SIZE reads instead of the real flash size (a clone, a bad factory page)

    # ----------------------------------------------------------------------------------------------------
    def validate(self) -> Faults:
        """Check every field's type and range; raise FaultSpecError (one line) on the first problem.

        Returns self so that `Faults(...).validate()` can be used inline.
        """
        if self.flash_kb not in FLASH_SIZES_KB or isinstance(self.flash_kb, bool):
            raise FaultSpecError(f"flash: {self.flash_kb!r} KB is not an STM32F405/407 size (512 or 1024)")
        sector_count = len(sectors_for(self.flash_kb * KB))
        if not isinstance(self.write_protected, list):
            raise FaultSpecError("wrp: write_protected must be a list of sector numbers")
        for sector in self.write_protected:
            if isinstance(sector, bool) or not isinstance(sector, int) or not 0 <= sector < sector_count:
                raise FaultSpecError(f"wrp: sector {sector!r} does not exist on a {self.flash_kb} KB part "
                                     f"(sectors 0-{sector_count - 1})")
        for name in ("rdp_level1", "hardware_watchdog", "cr_locked_by_bad_key", "bsy_stuck", "clone",
                     "max_timing", "crc_broken"):
            if not isinstance(getattr(self, name), bool):
                raise FaultSpecError(f"{_FIELD_TO_NAME[name]}: {name} must be true or false")
        if self.iwdg_timeout_ms is not None:
            timeout = self.iwdg_timeout_ms
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout) \
                    or not IWDG_MIN_MS <= timeout <= IWDG_MAX_MS:
                raise FaultSpecError(f"iwdg: timeout {timeout!r} ms is outside what the IWDG can count "
                                     f"({IWDG_MIN_MS:g} ms to {IWDG_MAX_MS:g} ms)")
        if isinstance(self.sticky_sr, bool) or not isinstance(self.sticky_sr, int) \
                or self.sticky_sr & ~reg.FLASH_SR_ERRORS:
            raise FaultSpecError(f"sticky: {self.sticky_sr!r} has bits that are not FLASH_SR error flags "
                                 f"({', '.join(STICKY_SR_BITS)})")
        if not isinstance(self.reset_during, list):
            raise FaultSpecError("reset: reset_during must be a list")
        for item in self.reset_during:
            if not isinstance(item, ResetDuring):
                raise FaultSpecError(f"reset: {item!r} is not a ResetDuring")
            item.validate()
        count = self.disconnect_after_commands
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise FaultSpecError(f"disconnect: command count {count!r} must be a whole number >= 0")
        vdd = self.supply_voltage
        if isinstance(vdd, bool) or not isinstance(vdd, (int, float)) or math.isnan(vdd) \
                or not VDD_MIN <= vdd <= VDD_MAX:
            raise FaultSpecError(f"vdd: {vdd!r} V is outside the STM32F407 supply range "
                                 f"({VDD_MIN:g} V to {VDD_MAX:g} V)")
        fsize = self.f_size_kb
        if fsize is not None and (isinstance(fsize, bool) or not isinstance(fsize, int) or not 0 <= fsize <= 0xFFFF):
            raise FaultSpecError(f"fsize: {fsize!r} is not a 16-bit F_SIZE value (0-65535 KB)")
        ohms = self.supply_resistance_ohm
        if ohms is not None and (isinstance(ohms, bool) or not isinstance(ohms, (int, float)) or math.isnan(ohms)
                                 or not 0 < ohms <= SUPPLY_RESISTANCE_MAX):
            raise FaultSpecError(f"weak-supply: {ohms!r} ohm is not a source resistance between 0 and "
                                 f"{SUPPLY_RESISTANCE_MAX:g} ohm")
        lsi = self.lsi_hz
        if isinstance(lsi, bool) or not isinstance(lsi, int) or not LSI_MIN_HZ <= lsi <= LSI_MAX_HZ:
            raise FaultSpecError(f"lsi: {lsi!r} Hz is outside the DS8626 LSI range "
                                 f"({LSI_MIN_HZ // 1000} kHz to {LSI_MAX_HZ // 1000} kHz)")
        return self

    # ----------------------------------------------------------------------------------------------------
    @property
    def option_byte_faults(self) -> bool:
        """True when any fault that lives in the option bytes (wrp, rdp1, hw-watchdog) is set."""
        return bool(self.write_protected) or self.rdp_level1 or self.hardware_watchdog

    def without_option_byte_faults(self) -> Faults:
        """A copy with the option-byte faults cleared (what faults.json holds once they are in the options)."""
        out = copy.deepcopy(self)
        out.write_protected = []
        out.rdp_level1 = False
        out.hardware_watchdog = False
        return out

    def is_default(self) -> bool:
        return self == Faults()

    def merged(self, other: Faults) -> Faults:
        """A copy of self with every non-default field of `other` added (same rules as the text form)."""
        out = copy.deepcopy(self)
        default = Faults()
        for f in dataclasses.fields(Faults):
            value = getattr(other, f.name)
            if value == getattr(default, f.name):
                continue
            if f.name == "write_protected":
                out.write_protected = sorted(set(out.write_protected) | set(value))
            elif f.name == "sticky_sr":
                out.sticky_sr |= value
            elif f.name == "reset_during":
                out.reset_during.extend(copy.deepcopy(item) for item in value
                                        if item not in out.reset_during)
            else:
                setattr(out, f.name, copy.deepcopy(value))
        return out

    # ----------------------------------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form: field names as keys, plain values (`sticky_sr` as an integer)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Faults:
        """The inverse of `to_dict`. Missing keys take their defaults; unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise FaultSpecError(f"faults must be a JSON object, not {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FaultSpecError(f"unknown fault {unknown[0]!r}; known: {', '.join(sorted(known))}")
        values = dict(data)
        if "reset_during" in values:
            items = values["reset_during"]
            if not isinstance(items, list):
                raise FaultSpecError("reset_during must be a list")
            values["reset_during"] = [_reset_from_dict(item) for item in items]
        if "write_protected" in values and isinstance(values["write_protected"], list):
            values["write_protected"] = sorted(set(values["write_protected"]), key=_sort_key)
        # JSON has no int/float distinction for whole numbers: 5 may come back for 5.0.
        faults = cls(**values)
        return faults.validate()

    def to_text(self) -> str:
        """The compact text form; `parse_fault_spec(f.to_text()) == f`. Empty for no faults."""
        items: List[str] = []
        for kind in FAULT_KINDS:
            items.extend(kind.format(self))
        return " ".join(items)

    def describe(self) -> List[str]:
        """One line per active fault: its text form and what it means."""
        lines = []
        for kind in FAULT_KINDS:
            for text in kind.format(self):
                lines.append(f"{text}: {kind.meaning}")
        return lines


def _sort_key(value: Any) -> Tuple[int, str]:
    return (value, "") if isinstance(value, int) and not isinstance(value, bool) else (1 << 30, repr(value))


def _reset_from_dict(item: Any) -> ResetDuring:
    if not isinstance(item, Mapping):
        raise FaultSpecError(f"reset_during entry {item!r} must be a JSON object")
    known = {f.name for f in dataclasses.fields(ResetDuring)}
    unknown = sorted(set(item) - known)
    if unknown:
        raise FaultSpecError(f"reset_during: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
    if "operation" not in item:
        raise FaultSpecError("reset_during entry needs an 'operation'")
    return ResetDuring(**item)


# ---------------------------------------------------------------------------------------------------------
# Text form.

@dataclass(frozen=True)
class FaultKind:
    """One name of the text form: how to parse it into a Faults, and how to print it back."""
    name: str
    value_form: Optional[str]  # None for a flag, else a short description of the value (for the help table)
    meaning: str
    option_byte: bool  # lives in the option bytes (chip state) rather than faults.json
    apply: Callable[[Faults, Optional[str]], None]
    format: Callable[[Faults], List[str]]
    example: str = ""  # a value, for the help table

    @property
    def usage(self) -> str:
        return self.name if self.value_form is None else f"{self.name}={self.value_form}"


def _flag(field_name: str) -> Tuple[Callable[[Faults, Optional[str]], None], Callable[[Faults], List[str]]]:
    def apply(faults: Faults, value: Optional[str]) -> None:
        setattr(faults, field_name, True)

    def fmt(faults: Faults) -> List[str]:
        return [_FIELD_TO_NAME[field_name]] if getattr(faults, field_name) else []
    return apply, fmt


def _parse_int(name: str, text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise FaultSpecError(f"{name}: {text!r} is not a whole number") from None


def _parse_sectors(text: str) -> List[int]:
    """`0-3`, `5`, `0,2,5-7`."""
    out: Set[int] = set()
    for part in text.split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise FaultSpecError(f"wrp: {part!r} is not a sector number or range like 0-3")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise FaultSpecError(f"wrp: range {part!r} runs backwards")
        out.update(range(first, last + 1))
    return sorted(out)


def format_sectors(sectors: List[int]) -> str:
    """Inverse of _parse_sectors, with runs collapsed: [0, 1, 2, 3, 6] -> '0-3,6'."""
    runs: List[List[int]] = []
    for sector in sorted(set(sectors)):
        if runs and sector == runs[-1][1] + 1:
            runs[-1][1] = sector
        else:
            runs.append([sector, sector])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _apply_wrp(faults: Faults, value: Optional[str]) -> None:
    faults.write_protected = sorted(set(faults.write_protected) | set(_parse_sectors(value or "")))


def _format_wrp(faults: Faults) -> List[str]:
    return [f"wrp={format_sectors(faults.write_protected)}"] if faults.write_protected else []


def _number(value: float) -> str:
    """Shortest text that reads back as exactly `value` (5.0 -> '5', 0.1 -> '0.1')."""
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


_DURATION_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _apply_iwdg(faults: Faults, value: Optional[str]) -> None:
    match = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|ms|s)?", (value or "").strip())
    if not match:
        raise FaultSpecError(f"iwdg: {value!r} is not a timeout like 5ms, 1.5s or 500us")
    faults.iwdg_timeout_ms = float(match.group(1)) * _DURATION_UNITS_MS[match.group(2) or "ms"]


def _format_iwdg(faults: Faults) -> List[str]:
    return [] if faults.iwdg_timeout_ms is None else [f"iwdg={_number(faults.iwdg_timeout_ms)}ms"]


def _apply_sticky(faults: Faults, value: Optional[str]) -> None:
    bits = 0
    for part in (value or "").split(","):
        name = part.strip().upper()
        if name not in STICKY_SR_BITS:
            raise FaultSpecError(f"sticky: {part.strip()!r} is not a FLASH_SR error flag; "
                                 f"known: {', '.join(STICKY_SR_BITS)}")
        bits |= STICKY_SR_BITS[name]
    faults.sticky_sr |= bits


def _format_sticky(faults: Faults) -> List[str]:
    names = [name for name, bit in STICKY_SR_BITS.items() if faults.sticky_sr & bit]
    return [f"sticky={','.join(names)}"] if names else []


def _apply_reset(faults: Faults, value: Optional[str]) -> None:
    parts = (value or "").split(":")
    if len(parts) > 4 or not parts[0]:
        raise FaultSpecError(f"reset: {value!r} is not OPERATION[:NTH[:PHASE[:CAUSE]]], "
                             f"e.g. erase:3:middle:brownout")
    item = ResetDuring(parts[0])
    if len(parts) > 1:
        item.nth = _parse_int("reset", parts[1])
    if len(parts) > 2:
        item.phase = parts[2]
    if len(parts) > 3:
        item.cause = parts[3]
    item.validate()
    if item not in faults.reset_during:
        faults.reset_during.append(item)


def _format_reset(faults: Faults) -> List[str]:
    return [f"reset={item.to_text()}" for item in faults.reset_during]


def _apply_disconnect(faults: Faults, value: Optional[str]) -> None:
    faults.disconnect_after_commands = _parse_int("disconnect", value or "")


def _format_disconnect(faults: Faults) -> List[str]:
    count = faults.disconnect_after_commands
    return [] if count is None else [f"disconnect={count}"]


def _apply_vdd(faults: Faults, value: Optional[str]) -> None:
    text = (value or "").strip()
    if text.lower().endswith("v"):
        text = text[:-1]
    try:
        faults.supply_voltage = float(text)
    except ValueError:
        raise FaultSpecError(f"vdd: {value!r} is not a voltage like 2.0") from None


def _format_vdd(faults: Faults) -> List[str]:
    return [] if faults.supply_voltage == Faults().supply_voltage else [f"vdd={_number(faults.supply_voltage)}"]


def _apply_flash(faults: Faults, value: Optional[str]) -> None:
    text = (value or "").strip().upper()
    if text.endswith("K") or text.endswith("KB"):
        text = text.rstrip("B").rstrip("K")
    faults.flash_kb = _parse_int("flash", text)


def _format_flash(faults: Faults) -> List[str]:
    return [] if faults.flash_kb == Faults().flash_kb else [f"flash={faults.flash_kb}"]


def _apply_lsi(faults: Faults, value: Optional[str]) -> None:
    """`lsi=47k`, `lsi=47kHz`, `lsi=17500` (Hz) or `lsi=17.5k`."""
    text = (value or "").strip().lower()
    if text.endswith("hz"):
        text = text[:-2]
    scale = 1000 if text.endswith("k") else 1
    text = text.rstrip("k")
    try:
        hz = float(text) * scale
    except ValueError:
        raise FaultSpecError(f"lsi: {value!r} is not a frequency like 47k") from None
    if math.isnan(hz) or hz != int(hz):
        raise FaultSpecError(f"lsi: {value!r} is not a whole number of Hz")
    faults.lsi_hz = int(hz)


def _apply_weak_supply(faults: Faults, value: Optional[str]) -> None:
    """`weak-supply=150`, `weak-supply=150ohm`: the supply's source resistance in ohms."""
    text = (value or "").strip().lower()
    for unit in ("ohms", "ohm", "r"):
        if text.endswith(unit):
            text = text[:-len(unit)]
            break
    try:
        faults.supply_resistance_ohm = float(text)
    except ValueError:
        raise FaultSpecError(f"weak-supply: {value!r} is not a resistance like 150 (ohms)") from None


def _format_weak_supply(faults: Faults) -> List[str]:
    ohms = faults.supply_resistance_ohm
    return [] if ohms is None else [f"weak-supply={_number(ohms)}"]


def _apply_fsize(faults: Faults, value: Optional[str]) -> None:
    faults.f_size_kb = _parse_int("fsize", (value or "").strip().upper().rstrip("B").rstrip("K"))


def _format_fsize(faults: Faults) -> List[str]:
    return [] if faults.f_size_kb is None else [f"fsize={faults.f_size_kb}"]


def _format_lsi(faults: Faults) -> List[str]:
    if faults.lsi_hz == Faults().lsi_hz:
        return []
    hz = faults.lsi_hz
    return [f"lsi={hz // 1000}k" if hz % 1000 == 0 else f"lsi={hz}"]


_FIELD_TO_NAME = {
    "write_protected": "wrp", "rdp_level1": "rdp1", "hardware_watchdog": "hw-watchdog",
    "iwdg_timeout_ms": "iwdg", "sticky_sr": "sticky", "cr_locked_by_bad_key": "bad-key", "bsy_stuck": "bsy-stuck",
    "reset_during": "reset", "disconnect_after_commands": "disconnect", "supply_voltage": "vdd",
    "flash_kb": "flash", "clone": "clone", "max_timing": "max-timing", "lsi_hz": "lsi",
    "supply_resistance_ohm": "weak-supply", "crc_broken": "crc-broken", "f_size_kb": "fsize",
}

FAULT_KINDS: Tuple[FaultKind, ...] = (
    FaultKind("wrp", "SECTORS", "write protection (nWRP=0) on these sectors", True,
              _apply_wrp, _format_wrp, example="0,5-7"),
    FaultKind("rdp1", None, "read-out protection level 1 (RDP=0x55): flash locked while a debugger is attached",
              True, *_flag("rdp_level1")),
    FaultKind("hw-watchdog", None, "hardware watchdog option (WDG_SW=0): the IWDG runs from every reset", True,
              *_flag("hardware_watchdog")),
    FaultKind("iwdg", "TIME", "the application starts the IWDG with this timeout", False,
              _apply_iwdg, _format_iwdg, example="5ms"),
    FaultKind("sticky", "FLAGS", "the application left these FLASH_SR error flags set", False,
              _apply_sticky, _format_sticky, example="PGSERR,PGPERR"),
    FaultKind("bad-key", None, "the application wrote a wrong FLASH_KEYR key: CR locked until the next reset",
              False, *_flag("cr_locked_by_bad_key")),
    FaultKind("bsy-stuck", None, "FLASH_SR.BSY never clears after an erase or program starts", False,
              *_flag("bsy_stuck")),
    FaultKind("reset", "OP[:N[:PHASE[:CAUSE]]]",
              "reset during the Nth erase or program (phase start|middle, cause brownout|pin|iwdg)",
              False, _apply_reset, _format_reset, example="erase:3:middle:brownout"),
    FaultKind("disconnect", "N", "the SWD link is lost after N probe commands", False,
              _apply_disconnect, _format_disconnect, example="200"),
    FaultKind("vdd", "VOLTS", "supply voltage the probe measures (1.8-3.6 V); below 2.7 V x32 is out of spec",
              False, _apply_vdd, _format_vdd, example="2.0"),
    FaultKind("flash", "KB", "flash size: 512 (STM32F407xE) or 1024 (STM32F407xG)", False,
              _apply_flash, _format_flash, example="1024"),
    FaultKind("clone", None, "a non-ST clone: identity registers and ROM table differ from ST's", False,
              *_flag("clone")),
    FaultKind("max-timing", None, "erase and program take DS8626 maximum times instead of typical", False,
              *_flag("max_timing")),
    FaultKind("lsi", "FREQ", "LSI frequency clocking the IWDG (DS8626: 17-47 kHz, 32 kHz typical)", False,
              _apply_lsi, _format_lsi, example="47k"),
    FaultKind("weak-supply", "OHMS", "the supply's source resistance: VDD sags by R x the program/erase current "
              "(DS8626: ~12 mA at x32, 8 at x16, 5 at x8) - a reset below the BOR/power-down threshold, OPERR below "
              "the PSIZE's minimum", False, _apply_weak_supply, _format_weak_supply, example="150"),
    FaultKind("crc-broken", None, "the CRC unit computes wrong values (a clone's or a damaged one)", False,
              *_flag("crc_broken")),
    FaultKind("fsize", "KB", "F_SIZE (0x1FFF7A22) reads this instead of the real flash size (a clone, a bad factory "
              "page)", False, _apply_fsize, _format_fsize, example="0"),
)
_KINDS_BY_NAME: Dict[str, FaultKind] = {kind.name: kind for kind in FAULT_KINDS}
OPTION_BYTE_FAULTS = tuple(kind.name for kind in FAULT_KINDS if kind.option_byte)


def known_fault_names() -> List[str]:
    return [kind.name for kind in FAULT_KINDS]


def split_fault_spec(text: str) -> List[str]:
    """Items of the text form: separated by white space or ';'."""
    return [item for item in re.split(r"[\s;]+", text.strip()) if item]


def parse_fault_spec(text: str, base: Optional[Faults] = None) -> Faults:
    """Apply the text form `text` to a copy of `base` (default: no faults) and return the validated result.

    Raises FaultSpecError with a one-line message for an unknown name, a missing or unexpected value, or a
    value out of range.
    """
    faults = copy.deepcopy(base) if base is not None else Faults()
    for item in split_fault_spec(text):
        name, sep, value = item.partition("=")
        kind = _KINDS_BY_NAME.get(name.lower())
        if kind is None:
            raise FaultSpecError(f"unknown fault {name!r}; known: {', '.join(known_fault_names())}")
        if kind.value_form is None and sep:
            raise FaultSpecError(f"{kind.name}: takes no value (write just '{kind.name}')")
        if kind.value_form is not None and not value:
            raise FaultSpecError(f"{kind.name}: needs a value, e.g. '{kind.usage}'")
        kind.apply(faults, value if sep else None)
    return faults.validate()


# ---------------------------------------------------------------------------------------------------------
# The documented Python API on a state directory (implemented in state.py, which needs this module).

def inject(state_dir: Optional[str] = None, spec: Union[str, Faults] = "") -> Faults:
    """Add faults to the virtual chip persisted in `state_dir` (None: $F4LOAD_SIM_STATE or the default).

    `spec` is the text form or a Faults. Option-byte faults (wrp, rdp1, hw-watchdog) are programmed into the
    persisted option bytes; the others go to faults.json and act when the chip runs. Returns the chip's
    faults afterwards. Raises FaultSpecError (bad spec) or state.SimStateError (bad directory, chip in use).
    """
    from f4load.sim.state import inject_faults

    return inject_faults(state_dir, spec)


def clear(state_dir: Optional[str] = None) -> None:
    """Remove every injected fault from the chip in `state_dir` (option bytes back to no WRP, RDP level 0,
    software watchdog; flash content and flash size kept)."""
    from f4load.sim.state import clear_faults

    clear_faults(state_dir)
