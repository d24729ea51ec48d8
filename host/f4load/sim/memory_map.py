"""The virtual STM32F407's memory map: what backs each address, and the layout of the read-only system pages.

Memory map (RM0090 2.3, f4load.part):
| range | backing | access rules |
|---|---|---|
| 0x0800_0000 main flash; 0x0 boot alias (BOOT0=0) | one buffer, mapped twice | read, execute; stores: flash model |
| 0x1000_0000 CCM, 64 KB | Unicorn RAM | read/write; executing faults (D-bus only, RM0090 2.3.1) |
| 0x1FFF_0000 system memory, 30 KB | Unicorn RAM | read, execute; stores go to the flash model (WRPERR) |
| 0x1FFF_7800 OTP, lock bytes, unique ID, F_SIZE | MMIO | read; stores go to the flash model |
| 0x1FFF_C000 option bytes | MMIO, from OptionBytes | read; stores go to the flash model (WRPERR) |
| 0x2000_0000 SRAM, 128 KB | Unicorn RAM | read/write/execute |
| 0x4000_0000..0x4007_FFFF peripherals | MMIO | FLASH, RCC, CRC, IWDG; the rest reads 0 (unclocked) |
| 0xE000_0000..0xE00F_FFFF PPB | MMIO | `debug.SystemControlSpace` |
Anything else: the debugger gets BusFault, the core a HardFault.

`region_kind` names the backing of a range ("flash", "ram", "sysmem", "mmio", "none"); `bus.py` dispatches on
it. Everything here is a pure function of addresses (and of the flash size, OTP and option bytes passed in).
"""
from __future__ import annotations

from typing import List, Tuple, Union

from f4load.part import (
    CCM_SIZE,
    CCM_START,
    F_SIZE,
    FLASH_START,
    KB,
    OPTION_BYTES,
    OTP_LOCK_SIZE,
    OTP_SIZE,
    OTP_START,
    SRAM_SIZE,
    SRAM_START,
    SYSTEM_MEMORY,
    SYSTEM_MEMORY_SIZE,
    UNIQUE_ID,
)
from f4load.sim.debug import PPB_END, PPB_START
from f4load.sim.flash import BusFault

PERIPH_START = 0x4000_0000
PERIPH_END = 0x4008_0000  # APB1, APB2 and AHB1 (RM0090 Table 1)
PERIPH_BLOCK = 0x400
OTP_PAGE = OTP_START  # 0x1FFF_7800: OTP, lock bytes, unique ID, F_SIZE (one 1 KB page)
OTP_PAGE_SIZE = 0x400
OPTION_PAGE_SIZE = 0x400
SYSTEM_AREA_END = 0x2000_0000  # system memory, OTP, option bytes: stores go to the flash model
# Regions answered by MMIO callbacks, as (base, size).
MMIO_REGIONS = ((OTP_PAGE, OTP_PAGE_SIZE), (OPTION_BYTES, OPTION_PAGE_SIZE),
                (PERIPH_START, PERIPH_END - PERIPH_START), (PPB_START, PPB_END - PPB_START))
RAM_REGIONS = ((SRAM_START, SRAM_SIZE), (CCM_START, CCM_SIZE))


def region_kind(address: int, length: int, flash_size: int) -> str:
    """What backs [address, address + length): flash, ram, sysmem, mmio, or none (also for mixed)."""
    end = address + length
    flash_end = FLASH_START + flash_size
    if (FLASH_START <= address and end <= flash_end) or end <= flash_size:
        return "flash"
    for start, size in RAM_REGIONS:
        if start <= address and end <= start + size:
            return "ram"
    if SYSTEM_MEMORY <= address and end <= SYSTEM_MEMORY + SYSTEM_MEMORY_SIZE:
        return "sysmem"
    for start, size in MMIO_REGIONS:
        if start <= address and end <= start + size:
            return "mmio"
    return "none"


def flash_offset(address: int) -> int:
    """Offset into the flash array of a main-flash address or of its boot alias at 0x0."""
    return address - FLASH_START if address >= FLASH_START else address


def model_address(address: int) -> int:
    """The boot alias at 0x0 is main flash."""
    return address + FLASH_START if address < FLASH_START else address


def split_accesses(address: int, length: int) -> List[Tuple[int, int]]:
    """Naturally aligned accesses covering [address, address + length): bytes/halfwords at the edges."""
    out = []
    end = address + length
    while address < end:
        size = 4
        while size > 1 and (address % size or address + size > end):
            size //= 2
        out.append((address, size))
        address += size
    return out


def check_access(address: int, size: int) -> None:
    """One AHB-AP transfer: 1, 2 or 4 bytes, naturally aligned; BusFault otherwise."""
    if size not in (1, 2, 4):
        raise BusFault(f"access size {size} at {address:#010x}: 1, 2 or 4 bytes only")
    if address % size:
        raise BusFault(f"unaligned {size}-byte access at {address:#010x}")


def otp_page_bytes(otp: Union[bytes, bytearray], unique_id: bytes, flash_size: int, address: int, size: int) -> bytes:
    """OTP (512 B), lock bytes (16 B), unique ID (12 B), F_SIZE (2 B); the rest of the page reads 0xFF."""
    page = bytearray(b"\xff" * OTP_PAGE_SIZE)
    page[0:OTP_SIZE + OTP_LOCK_SIZE] = bytes(otp[:OTP_SIZE + OTP_LOCK_SIZE])
    uid = UNIQUE_ID - OTP_PAGE
    page[uid:uid + 12] = unique_id[:12]
    fsize = F_SIZE - OTP_PAGE
    page[fsize:fsize + 2] = (flash_size // KB).to_bytes(2, "little")
    offset = address - OTP_PAGE
    return bytes(page[offset:offset + size])


def option_bytes_read(optcr: int, address: int, size: int) -> int:
    """RM0090 3.7.1 layout: 0x1FFF_C000 USER (7:0) and RDP (15:8); 0x1FFF_C008 nWRP (11:0). Reserved bits
    read 0 (a modelling choice)."""
    words = {0x0: optcr & 0xFFFC, 0x8: (optcr >> 16) & 0x0FFF}
    offset = address - OPTION_BYTES
    word = words.get(offset & ~3, 0)
    return (word >> ((offset & 3) * 8)) & ((1 << (8 * size)) - 1)


def system_memory_image() -> bytes:
    """30 KB standing in for ST's bootloader: a vector table (SP top of SRAM1, reset -> a `b .` loop at
    0x1FFF_0200) and zeros. Enough for "booting from system memory" to run something."""
    image = bytearray(SYSTEM_MEMORY_SIZE)
    image[0:4] = (SRAM_START + 0x5000).to_bytes(4, "little")
    image[4:8] = (SYSTEM_MEMORY + 0x200 + 1).to_bytes(4, "little")
    image[0x200:0x202] = (0xE7FE).to_bytes(2, "little")  # b .
    return bytes(image)


def stack_writable(frame_sp: int) -> bool:
    """An 8-word exception frame at frame_sp lies entirely in SRAM or CCM."""
    for start, size in RAM_REGIONS:
        if start <= frame_sp and frame_sp + 32 <= start + size:
            return True
    return False


__all__ = ["MMIO_REGIONS", "OPTION_PAGE_SIZE", "OTP_PAGE", "OTP_PAGE_SIZE", "PERIPH_BLOCK", "PERIPH_END",
           "PERIPH_START", "RAM_REGIONS", "SYSTEM_AREA_END", "check_access", "flash_offset", "model_address",
           "option_bytes_read", "otp_page_bytes", "region_kind", "split_accesses", "stack_writable",
           "system_memory_image"]
