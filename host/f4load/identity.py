"""What the target is: DBGMCU_IDCODE, F_SIZE, unique ID, CPUID, the CoreSight ROM table's designer.

- DBGMCU_IDCODE (0xE004_2000, RM0090 38.6.1): DEV_ID (bits 11:0) must be 0x413 for the STM32F405/407/415/417;
  REV_ID (bits 31:16) names the silicon revision. The revision names changed between RM0090 editions (the
  digest says so), so both are given where they differ and the raw value is always shown beside the name.
- F_SIZE (0x1FFF_7A22): flash size in KB (512 or 1024), and so the sector map (`f4load.part`).
- The 96-bit unique ID (0x1FFF_7A10).
- CPUID (0xE000_ED00, ARMv7-M B3.2.3): an ST F4 has a Cortex-M4 r0p1 (0x410F_C241).
- The CoreSight ROM table's peripheral ID registers (ARM IHI 0029, D1.2) give the JEP106 code of the company
  that designed the debug logic: ST (0:0x20) on ST silicon. A part that claims to be an F407 (DEV_ID 0x413)
  but whose ROM table or REV_ID is not ST's is a clone: its flash controller may differ in timing and
  behaviour, so a failure on it says less about the board.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from f4load.errors import TargetIdentityError
from f4load.floor import PSIZE_NAMES
from f4load.option_bytes import OptionBytes
from f4load.part import F_SIZE, UNIQUE_ID, Part, part_for_flash_kb
from f4load.registers import (
    CPUID_CORTEX_M4_R0P1,
    DBGMCU_IDCODE,
    DEV_ID_F40X_41X,
    FLASH_OPTCR,
    ROM_TABLE_BASE,
    SCS_CPUID,
)

# DBGMCU_IDCODE fields (RM0090 38.6.1).
DEV_ID_MASK = 0xFFF
REV_ID_SHIFT = 16
REV_NAMES = {0x1000: "A", 0x1001: "Z", 0x1003: "Y (1 in later RM0090 editions)",
             0x1007: "1 (2 in later RM0090 editions)"}
# CoreSight ROM table peripheral ID registers (ARM IHI 0029, D1.2): PIDR4 at +0xFD0, PIDR0..2 at +0xFE0.
ROM_PIDR4 = ROM_TABLE_BASE + 0xFD0
ROM_PIDR0 = ROM_TABLE_BASE + 0xFE0
JEP106_ST = (0, 0x20)  # (continuation code, identity) of STMicroelectronics
JEP106_NAMES = {JEP106_ST: "STMicroelectronics", (4, 0x3B): "ARM"}


@dataclass(frozen=True)
class TargetInfo:
    """What the session found out about the target before doing anything to it."""
    part: Part
    idcode: int
    unique_id: str  # the 96-bit unique ID (RM0090 39.1) as 24 hex digits, bytes in address order
    options: OptionBytes
    vdd: float
    vdd_source: str  # "probe" (measured), "given" (--vdd), "assumed" (the probe does not measure it)
    psize: int
    rom_designer: Tuple[int, int]  # JEP106 (continuation, identity) of the ROM table
    probe: str
    warnings: Tuple[str, ...] = ()
    cpuid: Optional[int] = None
    psize_asked: bool = False  # `psize` was asked for (Session psize=, --psize), not chosen from VDD
    # What a strict identification would have refused (read_identity(strict=False), for `f4load diagnose`): the
    # session then goes on with the 512 KB sector map assumed where F_SIZE is not a size of this family.
    identity_problems: Tuple[str, ...] = ()

    @property
    def unique_id_bytes(self) -> bytes:
        return bytes.fromhex(self.unique_id)

    @property
    def dev_id(self) -> int:
        return self.idcode & DEV_ID_MASK

    @property
    def rev_id(self) -> int:
        return self.idcode >> REV_ID_SHIFT

    @property
    def rev_name(self) -> Optional[str]:
        return REV_NAMES.get(self.rev_id)

    @property
    def psize_name(self) -> str:
        return PSIZE_NAMES[self.psize]

    @property
    def looks_like_st(self) -> bool:
        """ST's ROM table designer and a REV_ID ST shipped: not a clone as far as the debugger can tell."""
        return self.rom_designer == JEP106_ST and self.rev_id in REV_NAMES


def describe_jep106(designer: Tuple[int, int]) -> str:
    name = JEP106_NAMES.get(designer, "unknown")
    return f"{name} (JEP106 {designer[0]}:{designer[1]:#04x})"


@dataclass(frozen=True)
class RawIdentity:
    """The identity registers as read, before the supply voltage is known."""
    idcode: int
    part: Part
    unique_id: bytes
    options: OptionBytes
    rom_designer: Tuple[int, int]
    cpuid: int
    problems: Tuple[str, ...] = ()  # with strict=False: what would have been a TargetIdentityError


# The sector map assumed when F_SIZE is not a size of this family (diagnose only): the smaller part, so that
# nothing past a real 512 KB flash is addressed.
ASSUMED_FLASH_KB = 512


def read_identity(target: Any, strict: bool = True) -> RawIdentity:
    """Read and check the identity registers (module docstring). TargetIdentityError for another family or
    an F_SIZE this family does not have - or, with `strict=False` (`f4load diagnose`, which must look at such
    a part), the same sentences in `problems` and the 512 KB map assumed. pyocd's transfer errors pass
    through."""
    problems = []
    idcode = target.read32(DBGMCU_IDCODE)
    dev_id = idcode & DEV_ID_MASK
    if dev_id != DEV_ID_F40X_41X:
        problems.append(f"not an STM32F405/407/415/417: DBGMCU_IDCODE is {idcode:#010x}, DEV_ID {dev_id:#05x} "
                        f"(expected {DEV_ID_F40X_41X:#05x}); f4load programs this family only")
        if strict:
            raise TargetIdentityError(problems[-1])
    f_size_kb = target.read16(F_SIZE)
    try:
        _, part = part_for_flash_kb(f_size_kb)
    except ValueError:
        problems.append(f"F_SIZE (0x1FFF7A22) reads {f_size_kb} KB, not a flash size of the STM32F405/407/415/417 "
                        "(512 or 1024 KB): clone silicon?")
        if strict:
            raise TargetIdentityError(problems[-1]) from None
        _, part = part_for_flash_kb(ASSUMED_FLASH_KB)
    uid = struct.pack("<3I", *target.read_memory_block32(UNIQUE_ID, 3))
    options = OptionBytes(target.read32(FLASH_OPTCR))
    pidr = target.read_memory_block32(ROM_PIDR0, 3)
    pidr4 = target.read32(ROM_PIDR4)
    cpuid = target.read32(SCS_CPUID)
    designer = (pidr4 & 0xF, ((pidr[1] >> 4) & 0xF) | ((pidr[2] & 0x7) << 4))
    rev_id = idcode >> REV_ID_SHIFT
    return RawIdentity(idcode=idcode, part=Part(part.name, part.flash_size, dev_id, rev_id), unique_id=uid,
                       options=options, rom_designer=designer, cpuid=cpuid, problems=tuple(problems))


def clone_warnings(designer: Tuple[int, int], rev_id: int, cpuid: Optional[int] = None) -> List[str]:
    """Why this part may not be ST silicon, one sentence per reason (empty for a genuine part)."""
    warnings = []
    if designer != JEP106_ST:
        warnings.append(f"the debug ROM table was designed by {describe_jep106(designer)}, not by ST: "
                        "this is probably not ST silicon (a clone); its flash may behave differently")
    if rev_id not in REV_NAMES:
        warnings.append(f"REV_ID {rev_id:#06x} is not a revision ST shipped for this family (a clone?)")
    if cpuid is not None and cpuid != CPUID_CORTEX_M4_R0P1:
        warnings.append(f"CPUID {cpuid:#010x} is not the Cortex-M4 r0p1 ({CPUID_CORTEX_M4_R0P1:#010x}) ST uses "
                        "in this family (a clone?)")
    return warnings
