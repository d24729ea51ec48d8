"""The RAM stub as the host sees it: a typed descriptor built from the stub's ELF (the shipped FLM).

The stub is one position-independent blob (toolchain/README.md): PrgCode at offset 0, PrgData after it. It can
be loaded at any 4-byte aligned RAM address; every offset below is from the start of the blob. The same file
is a CMSIS-Pack flash algorithm (pyocd's PackFlashAlgo reads it directly).

How the host runs an entry point (the CMSIS flash algorithm convention, also what pyocd does):
write the halt word F4LOAD_HALT_WORD (BKPT #0; B .-2) somewhere, load the image, write the config word at
`config_offset`, then for each call set r0-r2 to the arguments, SP to a stack of at least `stack_need`
bytes, LR to the halt word's address + 1, PC to `load + entry.<Name>` (xPSR.T set), and resume; when the
core halts, r0 holds the result (see f4load.protocol.describe_result). The error record lives at
`load + error_offset` (struct f4load_error), the last CRC at `load + crc_offset`.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass, fields
from importlib import resources
from typing import Dict, List, Tuple

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from f4load import protocol

ARTIFACT_NAME = "f4load_stub.FLM"

# Entry points, named as the C functions: the CMSIS-Pack names, then f4load's own (Crc, Stream;
# ZlibCrc for pyocd's smart flash).
CMSIS_ENTRY_POINTS = ("Init", "UnInit", "EraseSector", "EraseChip", "ProgramPage", "Verify", "BlankCheck")
ENTRY_POINTS = CMSIS_ENTRY_POINTS + ("Crc", "Stream", "ZlibCrc", "Run", "Call")

# CMSIS-Pack FlashDevice (FlashOS.h): "<H128sHLLLLBxxxLL" then {size, offset} pairs ended by ~0, ~0.
FLASH_DEVICE_STRUCT = "<H128sHLLLLBxxxLL"
SECTOR_PAIR = "<LL"
SECTOR_END = 0xFFFF_FFFF


class StubImageError(Exception):
    """The ELF is not a usable f4load stub."""


@dataclass(frozen=True)
class EntryPoints:
    """Offsets (Thumb bit cleared) of the stub's entry points from the start of the blob."""
    Init: int
    UnInit: int
    EraseSector: int
    EraseChip: int
    ProgramPage: int
    Verify: int
    BlankCheck: int
    Crc: int
    Stream: int
    ZlibCrc: int
    Run: int
    Call: int

    def as_dict(self) -> Dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class FlashDeviceInfo:
    """The FlashDevice descriptor of the FLM (section DevDscr)."""
    name: str
    start: int
    size: int
    page_size: int
    empty_value: int
    program_timeout_ms: int
    erase_timeout_ms: int
    sectors: Tuple[Tuple[int, int], ...]  # (offset from start, sector size) of each run of equal sectors


@dataclass(frozen=True)
class RamLayout:
    """Absolute addresses for the f4load host's own use of RAM (the layout in f4load_protocol.h)."""
    halt_address: int      # the BKPT word; LR = halt_address + 1
    load_address: int      # where the image goes
    static_base: int       # start of PrgData (r9 for tools that insist on setting it)
    stack_top: int         # initial SP
    stack_limit: int       # lowest address the stack may reach
    queue_address: int     # struct f4load_queue (streaming)
    buffers: Tuple[int, ...]  # page buffers, F4LOAD_BUFFER_SIZE bytes each, one after the other


@dataclass(frozen=True)
class StubImage:
    """Everything the host needs to load and call the stub."""
    image: bytes           # PrgCode, then PrgData (zero-initialised data included), to load as one block
    code_size: int         # bytes of PrgCode (code and constants)
    data_size: int         # bytes of PrgData
    static_base: int       # offset of PrgData
    entry: EntryPoints
    config_offset: int     # uint32_t f4load_config: written by the host before Init
    error_offset: int      # struct f4load_error f4load_error: read by the host after a failure
    crc_offset: int        # uint32_t f4load_crc: result of Crc()
    call_offset: int       # struct f4load_call f4load_call: Call()'s arguments and result
    stack_need: int        # worst-case stack bytes of any entry point (from the build's call graph)
    flash_device: FlashDeviceInfo

    @property
    def page_buffer_offset(self) -> int:
        """First 16-byte aligned offset after the image: page buffers may start here (relative to load)."""
        return (len(self.image) + 15) & ~15

    def entry_address(self, load_address: int, name: str) -> int:
        """Address to put in PC to call `name` with the blob at `load_address` (Thumb bit clear)."""
        return load_address + getattr(self.entry, name)

    def layout(self, ram_base: int = protocol.const("F4LOAD_RAM_BASE")) -> RamLayout:
        """The f4load host's RAM layout, with this image's sizes checked against it."""
        c = protocol.const
        load = ram_base + c("F4LOAD_IMAGE_OFFSET")
        stack_top = ram_base + c("F4LOAD_STACK_TOP")
        if load + len(self.image) > stack_top - self.stack_need:
            raise StubImageError("the stub image and its stack do not fit below F4LOAD_STACK_TOP")
        buffers = tuple(ram_base + c("F4LOAD_BUFFER_OFFSET") + i * c("F4LOAD_BUFFER_SIZE")
                        for i in range(c("F4LOAD_BUFFER_COUNT")))
        return RamLayout(halt_address=ram_base, load_address=load, static_base=load + self.static_base,
                         stack_top=stack_top, stack_limit=load + len(self.image), queue_address=ram_base +
                         c("F4LOAD_QUEUE_OFFSET"), buffers=buffers)

    # --- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_elf(cls, data: bytes) -> StubImage:
        """Build the descriptor from the bytes of the stub's ELF (the FLM)."""
        elf = ELFFile(io.BytesIO(data))
        code = elf.get_section_by_name("PrgCode")
        prg_data = elf.get_section_by_name("PrgData")
        if code is None or prg_data is None:
            raise StubImageError("the ELF has no PrgCode/PrgData sections")
        if code["sh_addr"] != 0:
            raise StubImageError(f"PrgCode must start at 0, starts at {code['sh_addr']:#x}")
        if prg_data["sh_type"] != "SHT_PROGBITS":
            raise StubImageError("PrgData must be PROGBITS (zero-initialised data folded in)")
        symbols = _symbols(elf)
        data_start = prg_data["sh_addr"]
        image = bytearray(data_start + prg_data["sh_size"])
        image[:code["sh_size"]] = code.data()
        image[data_start:] = prg_data.data()

        def offset(name: str) -> int:
            if name not in symbols:
                raise StubImageError(f"the ELF has no symbol {name}")
            return symbols[name]

        entry = EntryPoints(**{name: offset(name) & ~1 for name in ENTRY_POINTS})
        return cls(
            image=bytes(image),
            code_size=code["sh_size"],
            data_size=prg_data["sh_size"],
            static_base=data_start,
            entry=entry,
            config_offset=offset("f4load_config"),
            error_offset=offset("f4load_error"),
            crc_offset=offset("f4load_crc"),
            call_offset=offset("f4load_call"),
            stack_need=offset("f4load_stack_need"),
            flash_device=_flash_device(elf, offset("FlashDevice")),
        )

    @classmethod
    def shipped(cls) -> StubImage:
        """The stub built into the f4load package (host/f4load/stub/f4load_stub.FLM)."""
        return cls.from_elf(shipped_elf_bytes())


def shipped_elf_bytes() -> bytes:
    return resources.files("f4load.stub").joinpath(ARTIFACT_NAME).read_bytes()


def _symbols(elf: ELFFile) -> Dict[str, int]:
    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        raise StubImageError("the ELF has no symbol table")
    out: Dict[str, int] = {}
    for sym in symtab.iter_symbols():
        if sym.name and sym["st_info"]["type"] in ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE"):
            out[sym.name] = sym["st_value"]
    return out


def _read(elf: ELFFile, address: int, size: int) -> bytes:
    for section in elf.iter_sections():
        start = section["sh_addr"]
        if section["sh_flags"] & 0x2 and start <= address and address + size <= start + section["sh_size"]:
            return section.data()[address - start:address - start + size]
    raise StubImageError(f"no section holds {size} bytes at {address:#x}")


def _flash_device(elf: ELFFile, address: int) -> FlashDeviceInfo:
    size = struct.calcsize(FLASH_DEVICE_STRUCT)
    (_vers, name, _type, start, dev_size, page, _res, empty, t_prog, t_erase) = struct.unpack(
        FLASH_DEVICE_STRUCT, _read(elf, address, size))
    sectors: List[Tuple[int, int]] = []
    at = address + size
    while True:
        sector_size, sector_offset = struct.unpack(SECTOR_PAIR, _read(elf, at, 8))
        if (sector_size, sector_offset) == (SECTOR_END, SECTOR_END):
            break
        sectors.append((sector_offset, sector_size))
        at += 8
    return FlashDeviceInfo(name=name.rstrip(b"\0").decode("ascii"), start=start, size=dev_size, page_size=page,
                           empty_value=empty, program_timeout_ms=t_prog, erase_timeout_ms=t_erase,
                           sectors=tuple(sectors))
