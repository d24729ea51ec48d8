"""The stub <-> host protocol, read from the one C header both sides share (stub/f4load_protocol.h).

cffi's `cdef` parses the header text, so the constants and struct layouts here are exactly the C ones:
`const("F4LOAD_KIND_LOCKED")`, `ffi.sizeof("struct f4load_error")`, `ffi.offsetof(...)`. On top of that:
- `describe_result(code)`: any stub result code in words (operation, sector, each FLASH_SR bit with its
  meaning from RM0090 3.7.4, and a hint), for the CLI and for pyocd error messages;
- `ErrorRecord`: the error record the host reads from the stub's RAM after a failure;
- `config_word()` / `psize_for_voltage()`: the config word the host writes before Init.
(The host twin of the stub's Crc() is f4load.crc.stm32_crc32.)

The header ships inside the package (host/f4load/stub/f4load_protocol.h, a copy of stub/ checked by the tests).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields
from importlib import resources
from typing import Dict, List, Optional

from cffi import FFI

from f4load import part

HEADER_NAME = "f4load_protocol.h"

# cdef understands neither preprocessor conditionals nor includes; the types come from cffi itself.
_NOT_FOR_CDEF = re.compile(r"^\s*#\s*(ifndef|endif|include)\b|^\s*#\s*define\s+F4LOAD_PROTOCOL_H\s*$")


def header_text() -> str:
    """The protocol header as shipped in the package."""
    return resources.files("f4load.stub").joinpath(HEADER_NAME).read_text(encoding="ascii")


def cdef_text(text: str) -> str:
    """The header with the lines cdef cannot parse (include guard, #include) removed."""
    return "\n".join(line for line in text.splitlines() if not _NOT_FOR_CDEF.match(line))


ffi = FFI()
ffi.cdef(cdef_text(header_text()))


def _integer_constants() -> Dict[str, int]:
    try:
        lib = ffi.dlopen(None)  # a library handle is how cffi exposes #define integers
        names = [n for n in dir(lib) if n.startswith("F4LOAD_")]
        return {n: int(getattr(lib, n)) for n in names}
    except OSError:  # pragma: no cover - platforms where dlopen(None) is refused
        return dict(ffi._parser._int_constants)  # type: ignore[attr-defined]


CONSTANTS: Dict[str, int] = _integer_constants()


def const(name: str) -> int:
    """The value of `#define name` in the protocol header."""
    return CONSTANTS[name]


def _names(prefix: str) -> Dict[int, str]:
    """value -> name (without the prefix) of the constants of one group, e.g. F4LOAD_KIND_*."""
    return {v: k[len(prefix):] for k, v in CONSTANTS.items()
            if k.startswith(prefix) and not k.endswith(("_SHIFT", "_MASK"))}


KIND_NAMES = _names("F4LOAD_KIND_")
OP_NAMES = _names("F4LOAD_OP_")

# Entry point of each OP, as the C function is called.
OP_FUNCTIONS = {
    const("F4LOAD_OP_INIT"): "Init", const("F4LOAD_OP_UNINIT"): "UnInit",
    const("F4LOAD_OP_ERASE_SECTOR"): "EraseSector", const("F4LOAD_OP_ERASE_CHIP"): "EraseChip",
    const("F4LOAD_OP_PROGRAM"): "ProgramPage", const("F4LOAD_OP_VERIFY"): "Verify",
    const("F4LOAD_OP_BLANK_CHECK"): "BlankCheck", const("F4LOAD_OP_CRC"): "Crc",
    const("F4LOAD_OP_STREAM"): "Stream", const("F4LOAD_OP_ZLIB_CRC"): "ZlibCrc",
}


@dataclass(frozen=True)
class ResultCode:
    """A stub result code taken apart (layout in f4load_protocol.h)."""
    code: int
    kind: int
    op: int
    sector: Optional[int]  # None: no single sector applies
    stale: bool
    detail: int
    sr_bits: int

    @classmethod
    def decode(cls, code: int) -> ResultCode:
        c = const
        sector = (code & c("F4LOAD_SECTOR_MASK")) >> c("F4LOAD_SECTOR_SHIFT")
        return cls(code=code, kind=(code & c("F4LOAD_KIND_MASK")) >> c("F4LOAD_KIND_SHIFT"),
                   op=(code & c("F4LOAD_OP_MASK")) >> c("F4LOAD_OP_SHIFT"),
                   sector=None if sector == c("F4LOAD_SECTOR_NONE") else sector,
                   stale=bool(code & c("F4LOAD_STALE")),
                   detail=(code & c("F4LOAD_DETAIL_MASK")) >> c("F4LOAD_DETAIL_SHIFT"),
                   sr_bits=code & c("F4LOAD_SR_MASK"))


# FLASH_SR error bits (RM0090 3.8.4) and what they mean (RM0090 3.7.4, via the digest).
SR_BITS = {
    1 << 1: ("OPERR", "operation error: the flash interface reported an error not covered by the other flags "
                      "(only reported with ERRIE set)"),
    1 << 4: ("WRPERR", "write protection error: the sector is write-protected (its nWRP bit is 0), or read-out "
                       "protection level 1 is active with a debugger connected (then no sector can be changed), "
                       "or a mass erase was asked while a sector is protected"),
    1 << 5: ("PGAERR", "programming alignment error: a program write crossed a 128-bit (16-byte) row"),
    1 << 6: ("PGPERR", "programming parallelism error: the write's access size did not match FLASH_CR.PSIZE"),
    1 << 7: ("PGSERR", "programming sequence error: the sequence was broken (a flash write without PG set, or "
                       "an erase started with PG set)"),
}

_SR_HINTS = {
    "OPERR": "Often the parallelism is too wide for the supply (x32 needs 2.7-3.6 V, x16 2.1-2.7 V, x8 "
             "1.8-2.1 V; RM0090 Table 13): measure VDD and use a narrower PSIZE.",
    "WRPERR": "Check the option bytes: nWRP (write protection per sector) and RDP (level 1 blocks all erase "
              "and program while a debugger is attached; going back to level 0 mass-erases the flash).",
    "PGAERR": "The stub only writes aligned units; this points at a stub bug or a foreign flash controller.",
    "PGPERR": "The stub writes with the PSIZE width; this points at a stub bug or a foreign flash controller.",
    "PGSERR": "Something else (the application, or another tool) left the flash interface mid-sequence; "
              "reset the chip and retry.",
}

_KIND_TEXT = {
    "FLASH_ERROR": "the flash interface refused or failed the operation",
    "BSY_TIMEOUT": "FLASH_SR.BSY stayed set for more than twice the DS8626 maximum time",
    "LOCKED": "FLASH_CR stayed locked after the unlock key sequence",
    "BEYOND_END": "the request reaches past the end of this part's flash (F_SIZE)",
    "BAD_ARGUMENT": "the request's address, size or alignment is not acceptable",
    "VERIFY_MISMATCH": "the flash contents differ from the data",
    "NOT_BLANK": "the range is not blank",
    "NOT_INITIALIZED": "the stub was called before Init (or after UnInit)",
    "BAD_CONFIG": "the config word is not valid",
    "NO_CYCLE_COUNTER": "the core's DWT has no working cycle counter, so no flash wait could be timed",
    "BAD_FLASH_SIZE": "F_SIZE (0x1FFF_7A22) does not name a flash size of this family (512 or 1024 KB)",
}

_KIND_HINTS = {
    "BSY_TIMEOUT": "The flash controller did not finish: reset or power-cycle the chip. A supply that sags "
                   "during erase (weak supply, missing VCAP capacitors) or clone silicon can cause this.",
    "LOCKED": "A wrong key written to FLASH_KEYR since the last reset (usually by the running application) "
              "locks FLASH_CR until the next reset. Reset the chip and connect under reset so the "
              "application does not run first.",
    "BEYOND_END": "This part has less flash than the image needs (a 512 KB part has sectors 0-7 only).",
    "NOT_INITIALIZED": "Call Init first (the host's sequence is wrong).",
    "BAD_CONFIG": "x64 parallelism needs 8-9 V on VPP, which f4load does not support; use x32 or narrower.",
    "NO_CYCLE_COUNTER": "Not a genuine Cortex-M4 with DWT? Check the chip identity (clone silicon).",
    "BAD_FLASH_SIZE": "Not an STM32F405/407/415/417, or clone silicon that reports a wrong F_SIZE.",
}

_ARG_TEXT = {
    "NOT_FLASH": "the address is not in main flash (0x0800_0000-0x080F_FFFF)",
    "NOT_SECTOR_START": "EraseSector needs the first address of a sector",
    "ALIGNMENT": "Crc needs a word-aligned address and size",
    "WRAPS": "address + size wraps around the 32-bit address space",
    "BAD_QUEUE": "the stream queue is not valid (no magic word)",
    "BAD_COMMAND": "the stream queue holds an unknown command",
    "BAD_BUFFER": "the command names a buffer that does not exist, or more data than a buffer holds",
}

_VERIFY_TEXT = {
    "COMPARE": ("Verify found a difference", "Erase and program again; a repeated mismatch means a worn or "
                                             "protected sector."),
    "AFTER_WRITE": ("a programmed unit read back different from what was written",
                    "The cell is worn or something else changed it: erase the sector and program again; if it "
                    "repeats, the sector is worn."),
    "NOT_ERASED": ("the location is not erased where the data needs a 1 bit; the stub refused to write it, so "
                   "the flash still holds what it held",
                   "Programming only clears bits: the location was not erased first; erase the sector, then "
                   "program (program only erased locations)."),
}


def sr_bit_names(sr: int) -> List[str]:
    """Names of the FLASH_SR error bits set in `sr`, in bit order."""
    return [name for bit, (name, _) in sorted(SR_BITS.items()) if sr & bit]


def _sector_text(sector: int) -> str:
    sectors = part.sectors_for(1024 * part.KB)
    if sector < len(sectors):
        s = sectors[sector]
        return f"sector {sector} ({s.start:#010x}, {s.size // part.KB} KB)"
    return f"sector {sector}"


_WRPERR = 1 << 4


def describe_result(code: int, record: Optional[ErrorRecord] = None) -> str:
    """Turn a stub result code (and, if given, the error record read after it) into words."""
    if code == const("F4LOAD_RESULT_OK"):
        return "success"
    r = ResultCode.decode(code)
    kind = KIND_NAMES.get(r.kind)
    if kind is None:
        return (f"unknown result code {code:#010x}: not an f4load stub result "
                "(Verify returns an address, not a code)")
    function = OP_FUNCTIONS.get(r.op, f"operation {r.op}")
    where = f" on {_sector_text(r.sector)}" if r.sector is not None else ""
    lines = [f"{function} failed{where}: {_KIND_TEXT[kind]} [{kind}, code {code:#010x}]"]
    hints: List[str] = []
    if r.op == const("F4LOAD_OP_ERASE_CHIP") and kind == "FLASH_ERROR" and r.sr_bits & _WRPERR and r.sector is not None:
        lines.append(f"  sector {r.sector} is write-protected (the first such sector): a mass erase needs every "
                     "sector unprotected, so the stub refused it before it started")
    if kind == "BAD_ARGUMENT":
        arg = _names("F4LOAD_ARG_").get(r.detail)
        if arg:
            lines.append(f"  {_ARG_TEXT[arg]}")
    if kind == "VERIFY_MISMATCH":
        ver = _names("F4LOAD_VERIFY_").get(r.detail)
        if ver:
            lines.append(f"  {_VERIFY_TEXT[ver][0]}")
            hints.append(_VERIFY_TEXT[ver][1])
    for bit, (name, meaning) in sorted(SR_BITS.items()):
        if r.sr_bits & bit:
            lines.append(f"  FLASH_SR.{name}: {meaning}")
            hints.append(_SR_HINTS[name])
    if record is not None:
        lines.append(f"  at {record.address:#010x}; FLASH_SR={record.sr:#010x} FLASH_CR={record.cr:#010x}")
        if kind in ("VERIFY_MISMATCH", "NOT_BLANK"):
            lines.append(f"  expected {record.expected:#x}, read {record.actual:#x}")
        if kind == "BSY_TIMEOUT":
            lines.append(f"  waited {record.waited_ms} ms")
        if kind == "LOCKED" and record.cfsr:
            lines.append(f"  the key writes caused a bus fault (CFSR={record.cfsr:#010x})")
    if r.stale:
        stale = record.stale_sr if record is not None else 0
        names = ", ".join(sr_bit_names(stale)) if stale else "error flags"
        lines.append(f"  note: {names} were already set before this operation (left by the application or an "
                     "earlier failure); the stub cleared them first")
    if kind in _KIND_HINTS:
        hints.insert(0, _KIND_HINTS[kind])
    lines.extend(f"  hint: {h}" for h in dict.fromkeys(hints))
    return "\n".join(lines)


# --- the error record -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ErrorRecord:
    """struct f4load_error, as read from the stub's RAM (field meanings in the header)."""
    result: int
    address: int
    sr: int
    cr: int
    expected: int
    actual: int
    waited_ms: int
    stale_sr: int
    cfsr: int
    flash_size: int
    failures: int

    SIZE = ffi.sizeof("struct f4load_error")

    @classmethod
    def from_bytes(cls, data: bytes) -> ErrorRecord:
        if len(data) < cls.SIZE:
            raise ValueError(f"an error record is {cls.SIZE} bytes, got {len(data)}")
        raw = ffi.new("struct f4load_error *")
        ffi.memmove(raw, data[:cls.SIZE], cls.SIZE)
        return cls(**{f.name: int(getattr(raw, f.name)) for f in fields(cls)})

    def describe(self) -> str:
        return describe_result(self.result, self)


# --- the config word --------------------------------------------------------------------------------------

PSIZE_X8, PSIZE_X16, PSIZE_X32 = 0, 1, 2


def psize_for_voltage(volts: float) -> int:
    """The widest parallelism the supply allows (RM0090 Table 13 / DS8626 Table 40; x64 needs VPP)."""
    if volts < 1.8 or volts > 3.6:
        raise ValueError(f"VDD {volts:.2f} V is outside the 1.8-3.6 V operating range")
    if volts < 2.1:
        return PSIZE_X8
    if volts < 2.7:
        return PSIZE_X16
    return PSIZE_X32


def config_word(psize: int = PSIZE_X32, clock_mhz: int = 0, iwdg: bool = True) -> int:
    """The config word the host writes at the stub's `f4load_config` before Init."""
    if psize not in (PSIZE_X8, PSIZE_X16, PSIZE_X32):
        raise ValueError("PSIZE must be x8, x16 or x32 (x64 needs VPP)")
    if not 0 <= clock_mhz <= 255:
        raise ValueError("clock_mhz must fit 8 bits")
    word = psize | (clock_mhz << const("F4LOAD_CONFIG_CLOCK_SHIFT"))
    return word if iwdg else word | const("F4LOAD_CONFIG_NO_IWDG")

