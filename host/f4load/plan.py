"""The second step of f4load's data flow: from an `Image` and the target's part, what to erase and program.

Flash on the F4 is erased by sector only (16/64/128 KB, RM0090 3.6.3 and Table 5) and programming can only
turn 1 bits into 0 bits, so only erased (0xFF) locations can be programmed (RM0090 3.6.4). A sector that holds
any image byte ("touched") is therefore either left alone, or erased and rewritten *completely*: every byte
it must hold afterwards - the image's bytes, and outside them either the bytes it held before ("kept", read
back from the target, the default) or 0xFF (`keep=False`) - is programmed again after the erase. Sectors that
hold no image byte are never in the plan, so nothing outside the touched sectors changes.

For each touched sector the planner builds the sector's new contents and decides:

| action | when | what runs |
|---|---|---|
| SKIP    | the CRC unit's checksum of the sector on the target equals that of the new contents | nothing |
| PROGRAM | the target's checksum is that of an erased sector (all 0xFF): no erase is needed    | program |
| ERASE   | otherwise, or when the target's checksum is not known                              | erase, program |

`target_crc(sector)` is the stub's Crc() over the whole sector (host twin `f4load.crc.stm32_crc32`); one CRC
costs ~1 ms of flash reading on the target against 0.25-2 s for an erase plus the upload, so asking is always
worth it. A CRC match can in theory be a collision (2^-32); a false "blank" would be caught anyway, since the
stub reads back every word it programs and reports VERIFY_MISMATCH for one that was not erased. `SectorPlan.crc`
is the checksum the sector must have afterwards: the executor verifies with it.

`read_back(address, length)` supplies the kept bytes, for the ranges of a touched sector the image does not
cover. It is not called when the target's CRC already shows those ranges erased (a blank sector, or one that
holds the image with 0xFF around it); it is called for a partly covered sector whose CRC differs, even when
that sector turns out unchanged once the kept bytes are in (the CRC of the whole sector cannot tell earlier).
What was read back for a sector that will be erased is in `SectorPlan.kept` and `Plan.kept_ranges()`: between
that sector's erase and the end of its programming those bytes live only in host memory, so the session writes
them to a backup file before that sector's erase (`f4load.job`, docs/cli.md).

Chunks: bytes to program are cut into `ProgramChunk`s that fit one of the stub's RAM buffers
(F4LOAD_BUFFER_SIZE in stub/f4load_protocol.h, 8 KB today): a chunk is cut from one sector's contents, so it
never spans a sector, and lies inside one BUFFER_SIZE-aligned block of flash; it starts on a word and has a
whole number of words (the stub programs 32-bit units at x32, RM0090 3.6.2 PSIZE). Runs of 0xFF need no
programming after an erase and are left out, unless the gap between two runs is shorter than GAP_MERGE: one
more command costs more link round trips than uploading a few hundred bytes of 0xFF, which the stub then skips
without a flash write.

Mass erase (RM0090 3.6.3, MER): when the plan rewrites every sector of the part (none unchanged) and keeps no
byte, one mass erase replaces the sector erases if it is faster (DS8626 Table 40 typical, `f4load.floor`: on a
1 MB part at x32 8 s against 8.55 s; never on a 512 KB part). `Plan.mass_erase` says so, and `operations()` then
starts with one `MassErase` followed by every sector's chunks.

Order (`Plan.operations()`): sectors in ascending address order, each one's erase followed by its chunks in
address order. Flash is a single bank, so an erase and a program can never run at the same time (RM0090 3.5);
what can overlap is the SWD upload with the flash operation. While the stub erases sector N (0.25-2 s) the host
fills the free buffers with sector N's chunks (15 x 8 KB buffers hold most of a 128 KB sector); while it
programs chunk k the host uploads the chunks after it. Erasing every sector first and programming afterwards
would gain nothing (the erases take as long either way) and would only delay the first program command.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple, Union

from f4load import protocol
from f4load.crc import stm32_crc32
from f4load.floor import mass_erase_beats, sector_erase_seconds
from f4load.image import ERASED, Image
from f4load.part import KB, Part, Sector

BUFFER_SIZE = protocol.const("F4LOAD_BUFFER_SIZE")
WORD = 4
# Two runs of bytes to program closer than this go into one chunk, the 0xFF between them included (see above).
GAP_MERGE = 256

ReadBack = Callable[[int, int], bytes]
TargetCrc = Callable[[Sector], int]


class Action(enum.Enum):
    SKIP = "skip"
    PROGRAM = "program"  # already erased: program without erasing
    ERASE = "erase"      # erase, then program

    @property
    def erases(self) -> bool:
        return self is Action.ERASE


@dataclass(frozen=True)
class ProgramChunk:
    """Bytes for one ProgramPage command / one stub buffer: word-aligned, at most BUFFER_SIZE bytes, inside
    one BUFFER_SIZE-aligned block of flash."""
    address: int
    data: bytes

    @property
    def end(self) -> int:
        return self.address + len(self.data)

    def __repr__(self) -> str:
        return f"ProgramChunk({self.address:#010x}..{self.end:#010x}, {len(self.data)} bytes)"


@dataclass(frozen=True)
class Erase:
    """Erase one sector (EraseSector(sector.start))."""
    sector: Sector


@dataclass(frozen=True)
class MassErase:
    """Erase the whole main flash at once (EraseChip, FLASH_CR.MER)."""
    part: Part


Operation = Union[Erase, MassErase, ProgramChunk]


@dataclass(frozen=True)
class SectorPlan:
    """What happens to one touched sector, and why.

    `crc`: the CRC unit's checksum the sector holds afterwards. `image_bytes`: bytes of the image in the
    sector; `kept_bytes`: bytes outside the image read back and rewritten (0 when the sector is blank, kept
    bytes of a blank sector are 0xFF and need no programming); `target_crc`: what the target reported, if asked;
    `kept`: the ranges read back, as (address, bytes), in address order.
    """
    sector: Sector
    action: Action
    chunks: Tuple[ProgramChunk, ...]
    reason: str
    crc: int
    image_bytes: int
    kept_bytes: int
    target_crc: Optional[int] = None
    kept: Tuple[Tuple[int, bytes], ...] = ()

    @property
    def programmed_bytes(self) -> int:
        return sum(len(c.data) for c in self.chunks)


@dataclass(frozen=True)
class Plan:
    """The work for one image on one part: a SectorPlan per touched sector, in address order."""
    part: Part
    source: str
    sectors: Tuple[SectorPlan, ...]
    keep: bool
    mass_erase: bool = False  # one MassErase instead of the sector erases (module docstring)

    def operations(self) -> Iterator[Operation]:
        """The work in the order to run it: per sector, its erase (if any), then its chunks; with `mass_erase`,
        one MassErase, then every sector's chunks."""
        if self.mass_erase:
            yield MassErase(self.part)
        for sector_plan in self.sectors:
            if sector_plan.action.erases and not self.mass_erase:
                yield Erase(sector_plan.sector)
            yield from sector_plan.chunks

    @property
    def erased_sectors(self) -> List[Sector]:
        """The sectors the work erases: every sector of the part with a mass erase."""
        if self.mass_erase:
            return list(self.part.sectors)
        return [s.sector for s in self.sectors if s.action.erases]

    @property
    def chunks(self) -> List[ProgramChunk]:
        return [c for s in self.sectors for c in s.chunks]

    @property
    def sectors_touched(self) -> int:
        return len(self.sectors)

    @property
    def sectors_erased(self) -> int:
        return sum(1 for s in self.sectors if s.action.erases)

    @property
    def sectors_skipped(self) -> int:
        return sum(1 for s in self.sectors if s.action is Action.SKIP)

    @property
    def bytes_erased(self) -> int:
        return sum(s.size for s in self.erased_sectors)

    @property
    def bytes_programmed(self) -> int:
        """Bytes handed to the stub (uploaded), 0xFF bytes inside merged chunks included."""
        return sum(s.programmed_bytes for s in self.sectors)

    @property
    def bytes_skipped(self) -> int:
        """Bytes of the sectors left alone because they already hold what they should."""
        return sum(s.sector.size for s in self.sectors if s.action is Action.SKIP)

    @property
    def bytes_kept(self) -> int:
        return sum(s.kept_bytes for s in self.sectors if s.action is not Action.SKIP)

    def kept_ranges(self) -> List[Tuple[int, bytes]]:
        """(address, bytes) read back from the sectors this plan erases: what exists only in host memory
        between an erase and the programming that follows it, and so what a backup must hold."""
        return [r for s in self.sectors if s.action.erases for r in s.kept]

    def summary(self) -> str:
        mass = ", one mass erase" if self.mass_erase else ""
        erased = f"{len(self.erased_sectors)} erased ({_size(self.bytes_erased)}{mass})"
        return (f"{self.source} -> {self.part.name}: {self.sectors_touched} sectors touched, "
                f"{erased}, {self.sectors_skipped} unchanged "
                f"({_size(self.bytes_skipped)}), {self.bytes_programmed:,} bytes to program in "
                f"{_count(len(self.chunks), 'chunk')}, {self.bytes_kept:,} bytes kept")

    def describe(self) -> str:
        """The plan for `-v`: the summary, then one line per touched sector."""
        lines = [self.summary()]
        for s in self.sectors:
            what = {Action.SKIP: "skip", Action.PROGRAM: "program", Action.ERASE: "erase+program"}[s.action]
            lines.append(f"  sector {s.sector.index:2d} {s.sector.start:#010x} {_size(s.sector.size):>6}  "
                         f"{what:<13} {s.programmed_bytes:7,d} B in {_count(len(s.chunks), 'chunk'):<10} {s.reason}")
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _size(n: int) -> str:
    return f"{n // KB} KB" if n % KB == 0 else f"{n:,} B"


def blank_crc(size: int) -> int:
    """The CRC unit's checksum of an erased (all 0xFF) range of `size` bytes."""
    return _BLANK_CRCS[size] if size in _BLANK_CRCS else stm32_crc32(bytes([ERASED]) * size)


_BLANK_CRCS = {size: stm32_crc32(bytes([ERASED]) * size) for size in (16 * KB, 64 * KB, 128 * KB)}


def plan(image: Image, part: Part, keep: bool = True, target_crc: Optional[TargetCrc] = None,
         read_back: Optional[ReadBack] = None, psize: int = protocol.PSIZE_X32) -> Plan:
    """Plan writing `image` to `part` (see the module docstring).

    `keep`: rewrite the bytes of touched sectors that lie outside the image with what they held (needs
    `read_back` unless `target_crc` shows those sectors blank); with keep=False they end up 0xFF.
    `target_crc(sector)`: the target's CRC of a whole sector, or None when unknown (then every touched sector
    is erased and rewritten). `psize`: the parallelism the work will run at (erase times, for the choice of a
    mass erase). Raises ImageError when the image does not fit the part.
    """
    image.check_fits(part)
    sectors = []
    for sector in part.sectors_touching(image.start, image.end):
        if next(image.ranges(sector.start, sector.end), None) is not None:
            sectors.append(plan_sector(image, sector, keep, target_crc, read_back))
    return Plan(part, image.source, tuple(sectors), keep, _mass_erase(part, sectors, psize))


def _mass_erase(part: Part, sectors: List[SectorPlan], psize: int) -> bool:
    """One mass erase for this work? Every sector of the part is rewritten (erased or blank, none unchanged),
    no byte is kept (they would be lost with the sectors around them), and MER beats the sector erases."""
    if len(sectors) != len(part.sectors) or any(s.action is Action.SKIP or s.kept_bytes for s in sectors):
        return False
    erased = [s.sector for s in sectors if s.action.erases]
    return mass_erase_beats(sector_erase_seconds(erased, psize), psize)


def gaps(image: Image, sector: Sector) -> List[Tuple[int, int]]:
    """[a, b) ranges of the sector without image data."""
    out, at = [], sector.start
    for a, b in image.ranges(sector.start, sector.end):
        if a > at:
            out.append((at, a))
        at = b
    if at < sector.end:
        out.append((at, sector.end))
    return out


def plan_sector(image: Image, sector: Sector, keep: bool, target_crc: Optional[TargetCrc],
                read_back: Optional[ReadBack]) -> SectorPlan:
    """One touched sector's plan (the module docstring); `plan` calls it for each."""
    contents = bytearray(image.data_at(sector.start, sector.size, fill=ERASED))
    image_bytes = sum(b - a for a, b in image.ranges(sector.start, sector.end))
    current = target_crc(sector) & 0xFFFF_FFFF if target_crc is not None else None
    blank = current == blank_crc(sector.size)
    kept = 0
    kept_ranges: List[Tuple[int, bytes]] = []
    outside = gaps(image, sector)
    # Nothing to read back when the target's CRC shows 0xFF outside the image already: a blank sector, or one
    # that holds exactly the image with 0xFF around it (the same program flashed before).
    unchanged_with_ff = current is not None and current == stm32_crc32(bytes(contents))
    if keep and outside and not blank and not unchanged_with_ff:
        if read_back is None:
            raise ValueError(f"keep=True needs read_back for sector {sector.index}: {len(outside)} ranges lie "
                             "outside the image")
        for a, b in outside:
            data = read_back(a, b - a)
            if len(data) != b - a:
                raise ValueError(f"read_back({a:#010x}, {b - a}) returned {len(data)} bytes")
            contents[a - sector.start:b - sector.start] = data
            kept_ranges.append((a, bytes(data)))
            kept += b - a
    crc = stm32_crc32(bytes(contents))
    chunks: Tuple[ProgramChunk, ...] = ()
    if current is not None and current == crc:
        action, reason = Action.SKIP, f"unchanged: CRC matches ({crc:#010x})"
    elif blank:
        action, reason = Action.PROGRAM, f"already erased (blank CRC {current:#010x}): program without erase"
    else:
        action = Action.ERASE
        if current is None:
            reason = "target contents unknown: erase and rewrite"
        else:
            reason = f"changed: target CRC {current:#010x}, new contents {crc:#010x}"
        if outside:
            left = sum(b - a for a, b in outside)
            reason += (f"; keeps {kept:,} bytes outside the image" if keep
                       else f"; {left:,} bytes outside the image left erased (keep=False)")
    if action is not Action.SKIP:
        chunks = tuple(_chunks(sector.start, bytes(contents)))
    return SectorPlan(sector, action, chunks, reason, crc, image_bytes, kept, current, tuple(kept_ranges))


_NOT_ERASED = re.compile(rb"[^\xff]+")


def _runs(contents: bytes) -> List[Tuple[int, int]]:
    """[a, b) word-aligned runs of `contents` that hold a byte other than 0xFF; gaps < GAP_MERGE merged."""
    runs: List[Tuple[int, int]] = []
    for match in _NOT_ERASED.finditer(contents):
        a = match.start() - match.start() % WORD
        b = min(len(contents), match.end() + -match.end() % WORD)
        if runs and a - runs[-1][1] < GAP_MERGE:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
    return runs


def _chunks(base: int, contents: bytes) -> Iterator[ProgramChunk]:
    """Chunks programming one sector's `contents` at `base` (the sector start) after an erase."""
    for a, b in _runs(contents):
        while a < b:
            cut = min(b, ((base + a) // BUFFER_SIZE + 1) * BUFFER_SIZE - base)
            yield ProgramChunk(base + a, contents[a:cut])
            a = cut
