"""The STM32F405/407/415/417 family: memory map, sector map and identity (RM0090 2.3, 3.3; DS8626).

One source of truth for "which sector holds this address", used by the planner and the virtual chip alike.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import List, Optional, Tuple

FLASH_START = 0x0800_0000
SYSTEM_MEMORY = 0x1FFF_0000
SYSTEM_MEMORY_SIZE = 30 * 1024
OTP_START = 0x1FFF_7800
OTP_SIZE = 512
OTP_LOCK_START = 0x1FFF_7A00
OTP_LOCK_SIZE = 16
UNIQUE_ID = 0x1FFF_7A10
F_SIZE = 0x1FFF_7A22
OPTION_BYTES = 0x1FFF_C000
SRAM_START = 0x2000_0000
SRAM_SIZE = 128 * 1024  # SRAM1 112 KB + SRAM2 16 KB, contiguous
CCM_START = 0x1000_0000
CCM_SIZE = 64 * 1024  # data bus only: the core cannot execute from CCM

KB = 1024
# RM0090 Table 5: sectors 0-3 16 KB, 4 64 KB, 5-11 128 KB.
_SECTOR_SIZES = [16 * KB] * 4 + [64 * KB] + [128 * KB] * 7


@dataclass(frozen=True)
class Sector:
    index: int
    start: int
    size: int

    @property
    def end(self) -> int:
        """One past the last byte."""
        return self.start + self.size


@cache
def _sector_map(flash_size: int) -> Tuple[Sector, ...]:
    out, addr = [], FLASH_START
    for index, size in enumerate(_SECTOR_SIZES):
        if addr - FLASH_START >= flash_size:
            break
        out.append(Sector(index, addr, size))
        addr += size
    if addr - FLASH_START != flash_size:
        raise ValueError(f"no STM32F40x/41x has {flash_size // KB} KB of flash")
    return tuple(out)


def sectors_for(flash_size: int) -> List[Sector]:
    """The sector map of a part with `flash_size` bytes of main flash (512 KB or 1 MB)."""
    return list(_sector_map(flash_size))


# The 1 MB map: sector numbers as the stub and RM0090 Table 5 use them on every part (a 512 KB part has
# sectors 0-7 of it).
SECTORS_1M: Tuple[Sector, ...] = _sector_map(1024 * KB)


@dataclass(frozen=True)
class Part:
    """One concrete part: what the identity registers say and how big its flash is."""
    name: str
    flash_size: int
    dev_id: int = 0x413
    rev_id: int = 0x1007  # "revision 1/Z" on current silicon; RM0090 38.6.1

    @property
    def sectors(self) -> List[Sector]:
        return sectors_for(self.flash_size)

    @property
    def flash_end(self) -> int:
        return FLASH_START + self.flash_size

    def sector_at(self, address: int) -> Optional[Sector]:
        for sector in self.sectors:
            if sector.start <= address < sector.end:
                return sector
        return None

    def sectors_touching(self, start: int, end: int) -> List[Sector]:
        """Sectors that hold any byte of [start, end)."""
        return [s for s in self.sectors if s.start < end and start < s.end]


PARTS = {
    "stm32f407ve": Part("STM32F407VE", 512 * KB),
    "stm32f407vg": Part("STM32F407VG", 1024 * KB),
}


def part_for_flash_kb(f_size_kb: int) -> Tuple[str, Part]:
    for key, part in PARTS.items():
        if part.flash_size == f_size_kb * KB:
            return key, part
    raise ValueError(f"F_SIZE says {f_size_kb} KB: not an STM32F405/407/415/417 flash size")
