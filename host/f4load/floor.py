"""The physical floor of flash work: the least time the flash itself needs (DS8626 Table 40).

One program write of any PSIZE width takes 16 us typical (100 us maximum); a sector erase takes, per parallelism,
the seconds below by sector size. Erases and program writes cannot overlap on this single-bank flash (RM0090
3.5), so the floor of a piece of work is their sum. `f4load.report` compares the virtual time of a command with
it; `f4load.diagnose` compares a trial erase with the typical..maximum range.
"""
from __future__ import annotations

from typing import Iterable, Tuple

from f4load import protocol
from f4load.part import KB, Sector

PROGRAM_WRITE_S = 16e-6
PROGRAM_WRITE_MAX_S = 100e-6
ERASE_TYPICAL_S = {
    protocol.PSIZE_X8: {16 * KB: 0.400, 64 * KB: 1.200, 128 * KB: 2.0},
    protocol.PSIZE_X16: {16 * KB: 0.300, 64 * KB: 0.700, 128 * KB: 1.3},
    protocol.PSIZE_X32: {16 * KB: 0.250, 64 * KB: 0.550, 128 * KB: 1.0},
}
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


def floor_seconds(erased: Iterable[Sector], writes: int, psize: int) -> float:
    """The least time the flash itself needs for this work (DS8626 Table 40 typical): erases and program
    writes cannot overlap on a single-bank part (RM0090 3.5), so the floor is their sum."""
    return sum(ERASE_TYPICAL_S[psize][s.size] for s in erased) + writes * PROGRAM_WRITE_S


def erase_range_seconds(sector: Sector, psize: int) -> Tuple[float, float]:
    """(typical, maximum) seconds of one sector erase at this parallelism (DS8626 Table 40)."""
    return ERASE_TYPICAL_S[psize][sector.size], ERASE_MAX_S[psize][sector.size]
