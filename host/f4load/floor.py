"""The physical floor of flash work: the least time the flash itself needs (DS8626 Table 40).

One program write of any PSIZE width takes 16 us typical (100 us maximum); a sector erase takes, per parallelism,
the seconds below by sector size, and a mass erase of the whole part (MER) the time in MASS_ERASE_TYPICAL_S. Erases
and program writes cannot overlap on this single-bank flash (RM0090 3.5), so the floor of a piece of work is their
sum; erasing every sector of a part costs the lesser of the sector erases and one mass erase
(`mass_erase_is_faster`: on a 1 MB part at x32, 8 s against 8.55 s). `f4load.report` compares the virtual time of
a command with it; `f4load.diagnose` compares a trial erase with the typical..maximum range.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence, Tuple

from f4load import protocol
from f4load.part import KB, Sector, sectors_for

PROGRAM_WRITE_S = 16e-6
PROGRAM_WRITE_MAX_S = 100e-6
ERASE_TYPICAL_S = {
    protocol.PSIZE_X8: {16 * KB: 0.400, 64 * KB: 1.200, 128 * KB: 2.0},
    protocol.PSIZE_X16: {16 * KB: 0.300, 64 * KB: 0.700, 128 * KB: 1.3},
    protocol.PSIZE_X32: {16 * KB: 0.250, 64 * KB: 0.550, 128 * KB: 1.0},
}
# Mass erase of the whole main flash (DS8626 Table 40, typical; x64 with VPP is not supported).
MASS_ERASE_TYPICAL_S = {protocol.PSIZE_X8: 16.0, protocol.PSIZE_X16: 11.0, protocol.PSIZE_X32: 8.0}
# The maximums are twice the typical values for every size and width (DS8626 Table 40).
ERASE_MAX_S = {psize: {size: 2 * t for size, t in times.items()} for psize, times in ERASE_TYPICAL_S.items()}
PSIZE_BYTES = {protocol.PSIZE_X8: 1, protocol.PSIZE_X16: 2, protocol.PSIZE_X32: 4}
PSIZE_NAMES = {protocol.PSIZE_X8: "x8", protocol.PSIZE_X16: "x16", protocol.PSIZE_X32: "x32"}


def program_writes(data: bytes, address: int, psize: int) -> int:
    """Flash program writes needed for `data` at `address` on erased flash: one per PSIZE-wide unit that
    holds a byte other than 0xFF (the stub skips units that would clear no bit)."""
    width = PSIZE_BYTES[psize]
    head = address % width
    padded = b"\xff" * head + data + b"\xff" * (-(head + len(data)) % width)
    erased = b"\xff" * width
    return sum(1 for i in range(0, len(padded), width) if padded[i:i + width] != erased)


def whole_part(sectors: Iterable[Sector]) -> bool:
    """True when `sectors` are every sector of a 512 KB or 1 MB part (0-7 or 0-11): what a mass erase erases."""
    indexes = sorted(s.index for s in sectors)
    return any(indexes == [s.index for s in sectors_for(size * KB)] for size in (512, 1024))


def sector_erase_seconds(sectors: Iterable[Sector], psize: int) -> float:
    return math.fsum(ERASE_TYPICAL_S[psize][s.size] for s in sectors)


def mass_erase_beats(sector_seconds: float, psize: int) -> bool:
    """One mass erase takes less than `sector_seconds` of sector erases (a tie, e.g. 1 MB at x16, is not less)."""
    return MASS_ERASE_TYPICAL_S[psize] < sector_seconds - 1e-9


def mass_erase_is_faster(sectors: Sequence[Sector], psize: int) -> bool:
    """Erase these sectors with one mass erase (RM0090 3.6.3, MER)? Only when they are the whole part and one MER
    takes less than the sector erases (DS8626 Table 40 typical: a 1 MB part at x32 or x8; never a 512 KB part,
    whose 4.55 s of sector erases beat the 8 s MER at x32)."""
    return whole_part(sectors) and mass_erase_beats(sector_erase_seconds(sectors, psize), psize)


def floor_seconds(erased: Iterable[Sector], writes: int, psize: int) -> float:
    """The least time the flash itself needs for this work (DS8626 Table 40 typical): erases and program
    writes cannot overlap on a single-bank part (RM0090 3.5), so the floor is their sum; the erase of a whole
    part counts as the faster of its sector erases and one mass erase."""
    sectors = list(erased)
    erase = sector_erase_seconds(sectors, psize)
    if mass_erase_is_faster(sectors, psize):
        erase = MASS_ERASE_TYPICAL_S[psize]
    return erase + writes * PROGRAM_WRITE_S


def erase_range_seconds(sector: Sector, psize: int) -> Tuple[float, float]:
    """(typical, maximum) seconds of one sector erase at this parallelism (DS8626 Table 40)."""
    return ERASE_TYPICAL_S[psize][sector.size], ERASE_MAX_S[psize][sector.size]
