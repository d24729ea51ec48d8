"""Planning: which sectors are erased, skipped or only programmed, which bytes go where, and in what order.

The target here is `NorFlash`, a byte array with the two rules of the F4's flash (RM0090 3.6): an erase sets a
whole sector to 0xFF, a program write can only clear bits. Running a plan on it must leave exactly the image,
plus the kept (or erased) bytes around it in touched sectors, and nothing else changed.
"""
from __future__ import annotations

import random
import re
from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from f4load import protocol
from f4load.crc import stm32_crc32
from f4load.floor import floor_seconds
from f4load.image import Image, ImageError, Segment
from f4load.part import FLASH_START, KB, PARTS, Part, Sector
from f4load.plan import BUFFER_SIZE, Action, Erase, MassErase, Plan, ProgramChunk, blank_crc, plan

F407VE = PARTS["stm32f407ve"]
F407VG = PARTS["stm32f407vg"]


class NorFlash:
    """Main flash as a byte array with NOR semantics; serves the planner's target callbacks and counts them."""

    def __init__(self, part: Part, contents: Optional[bytes] = None) -> None:
        self.part = part
        self.memory = bytearray(contents if contents is not None else b"\xff" * part.flash_size)
        self.crc_calls: List[int] = []
        self.read_calls: List[Tuple[int, int]] = []

    def read(self, address: int, length: int) -> bytes:
        return bytes(self.memory[address - FLASH_START:address - FLASH_START + length])

    def crc(self, sector: Sector) -> int:
        self.crc_calls.append(sector.index)
        return stm32_crc32(self.read(sector.start, sector.size))

    def read_back(self, address: int, length: int) -> bytes:
        self.read_calls.append((address, length))
        return self.read(address, length)

    def write(self, address: int, data: bytes) -> None:
        self.memory[address - FLASH_START:address - FLASH_START + len(data)] = data

    def run(self, work: Plan) -> None:
        for op in work.operations():
            if isinstance(op, Erase):
                self.write(op.sector.start, b"\xff" * op.sector.size)
            elif isinstance(op, MassErase):
                self.write(FLASH_START, b"\xff" * op.part.flash_size)
            else:
                old = self.read(op.address, len(op.data))
                result = bytes(o & n for o, n in zip(old, op.data))
                assert result == op.data, f"{op!r} programs locations that are not erased"
                self.write(op.address, result)


def random_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def sector(part: Part, index: int) -> Sector:
    return part.sectors[index]


# --- what happens to each touched sector ---------------------------------------------------------------------

def test_blank_chip_is_programmed_without_any_erase() -> None:
    image = Image.from_bytes(random_bytes(1, 40 * KB))
    flash = NorFlash(F407VE)
    work = plan(image, F407VE, target_crc=flash.crc, read_back=flash.read_back)
    assert [s.action for s in work.sectors] == [Action.PROGRAM] * 3
    assert work.bytes_erased == 0
    assert flash.read_calls == []  # a blank sector keeps 0xFF by itself: nothing to read back
    flash.run(work)
    assert flash.read(FLASH_START, 40 * KB) == image.data_at(FLASH_START, 40 * KB)


def test_same_image_again_does_nothing() -> None:
    image = Image.from_bytes(random_bytes(2, 100 * KB))
    flash = NorFlash(F407VE)
    flash.write(FLASH_START, image.segments[0].data)
    work = plan(image, F407VE, target_crc=flash.crc, read_back=flash.read_back)
    assert [s.action for s in work.sectors] == [Action.SKIP] * 5
    assert all(s.reason.startswith("unchanged: CRC matches") for s in work.sectors)
    assert list(work.operations()) == []
    assert (work.bytes_skipped, work.bytes_programmed, work.bytes_erased) == (128 * KB, 0, 0)


def test_same_image_with_erased_flash_around_it_reads_nothing_back() -> None:
    image = Image([Segment(0x0800_0100, random_bytes(10, 20 * KB))])  # sectors 0 and 1, both partly
    flash = NorFlash(F407VE)
    flash.write(image.start, image.segments[0].data)
    work = plan(image, F407VE, target_crc=flash.crc, read_back=flash.read_back)
    assert [s.action for s in work.sectors] == [Action.SKIP, Action.SKIP]
    assert flash.read_calls == []


def test_only_the_changed_sector_is_erased() -> None:
    old = random_bytes(3, 64 * KB)
    new = bytearray(old)
    new[0x4010] ^= 0x01  # one bit in sector 1
    flash = NorFlash(F407VE)
    flash.write(FLASH_START, old)
    work = plan(Image.from_bytes(bytes(new)), F407VE, target_crc=flash.crc, read_back=flash.read_back)
    assert [s.action for s in work.sectors] == [Action.SKIP, Action.ERASE, Action.SKIP, Action.SKIP]
    assert [op for op in work.operations() if isinstance(op, Erase)] == [Erase(sector(F407VE, 1))]
    flash.run(work)
    assert flash.read(FLASH_START, 64 * KB) == bytes(new)


def test_bytes_around_the_image_in_a_touched_sector_are_kept() -> None:
    old = random_bytes(4, 128 * KB)
    flash = NorFlash(F407VE)
    flash.write(FLASH_START, old)
    patch = Image([Segment(0x0800_0100, b"new!"), Segment(0x0801_2000, b"also")])  # sectors 0 and 4
    work = plan(patch, F407VE, target_crc=flash.crc, read_back=flash.read_back)
    assert [(s.sector.index, s.action) for s in work.sectors] == [(0, Action.ERASE), (4, Action.ERASE)]
    assert work.bytes_kept == 16 * KB - 4 + 64 * KB - 4
    assert "keeps 16,380 bytes outside the image" in work.sectors[0].reason
    flash.run(work)
    expected = bytearray(old)
    expected[0x100:0x104] = b"new!"
    expected[0x12000:0x12004] = b"also"
    assert flash.read(FLASH_START, 128 * KB) == bytes(expected)


def test_kept_ranges_are_the_bytes_read_back_around_the_image_in_erased_sectors() -> None:
    old = random_bytes(11, 128 * KB)
    flash = NorFlash(F407VE)
    flash.write(FLASH_START, old)
    flash.write(FLASH_START + 0x8000, b"\xff" * 16 * KB)  # sector 2 blank: programmed without erase
    patch = Image([Segment(0x0800_0100, b"new!"), Segment(0x0800_8000, b"blnk"), Segment(0x0801_2000, b"also")])
    work = plan(patch, F407VE, target_crc=flash.crc, read_back=flash.read_back)
    assert [s.action for s in work.sectors] == [Action.ERASE, Action.PROGRAM, Action.ERASE]
    assert work.kept_ranges() == [
        (0x0800_0000, old[:0x100]), (0x0800_0104, old[0x104:0x4000]),
        (0x0801_0000, old[0x10000:0x12000]), (0x0801_2004, old[0x12004:0x20000])]
    assert sum(len(data) for _, data in work.kept_ranges()) == work.bytes_kept


def test_a_plan_that_erases_nothing_has_no_kept_ranges_to_lose() -> None:
    old = random_bytes(12, 16 * KB)
    flash = NorFlash(F407VE)
    flash.write(FLASH_START, old)
    same = Image([Segment(0x0800_0100, old[0x100:0x200])])
    assert plan(same, F407VE, target_crc=flash.crc, read_back=flash.read_back).kept_ranges() == []


def test_keep_false_leaves_the_rest_of_touched_sectors_erased() -> None:
    flash = NorFlash(F407VE)
    flash.write(FLASH_START, random_bytes(5, 64 * KB))
    work = plan(Image([Segment(0x0800_4100, b"only this")]), F407VE, keep=False, target_crc=flash.crc)
    assert [(s.sector.index, s.action) for s in work.sectors] == [(1, Action.ERASE)]
    assert "left erased (keep=False)" in work.sectors[0].reason
    flash.run(work)
    assert flash.read(0x0800_4000, 16 * KB) == b"\xff" * 0x100 + b"only this" + b"\xff" * (16 * KB - 0x109)
    assert flash.read(FLASH_START, 16 * KB) == random_bytes(5, 64 * KB)[:16 * KB]  # sector 0 untouched


def test_without_target_knowledge_every_touched_sector_is_erased_and_rewritten() -> None:
    image = Image.from_bytes(b"\x5a" * (20 * KB))
    work = plan(image, F407VE, keep=False)
    assert [s.action for s in work.sectors] == [Action.ERASE, Action.ERASE]
    assert all(s.reason.startswith("target contents unknown") for s in work.sectors)
    assert work.bytes_erased == 32 * KB


def test_keeping_bytes_without_a_way_to_read_them_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="keep=True needs read_back"):
        plan(Image([Segment(0x0800_0010, b"abc")]), F407VE)


def test_image_that_does_not_fit_the_part_is_refused() -> None:
    image = Image.from_bytes(b"\x00" * (512 * KB + 16), source="big.bin")
    with pytest.raises(ImageError, match="big.bin: too large for the STM32F407VE"):
        plan(image, F407VE, keep=False)
    assert plan(image, F407VG, keep=False).sectors_touched == 9


def test_sector_to_hold_only_ff_is_erased_but_not_programmed() -> None:
    flash = NorFlash(F407VE)
    flash.write(FLASH_START, b"\x00" * 16 * KB)
    work = plan(Image.from_bytes(b"\xff" * 16 * KB), F407VE, target_crc=flash.crc, read_back=flash.read_back)
    assert (work.sectors[0].action, work.sectors[0].chunks) == (Action.ERASE, ())
    assert work.sectors[0].crc == blank_crc(16 * KB)


def test_sector_crc_in_the_plan_is_what_the_target_reports_after_running_it() -> None:
    flash = NorFlash(F407VG)
    flash.write(0x0802_0000, random_bytes(6, 128 * KB))
    work = plan(Image([Segment(0x0802_0400, random_bytes(7, 3000))]), F407VG, target_crc=flash.crc,
                read_back=flash.read_back)
    flash.run(work)
    assert [flash.crc(s.sector) for s in work.sectors] == [s.crc for s in work.sectors]


# --- chunks and order -----------------------------------------------------------------------------------------

def test_chunks_fit_a_stub_buffer_and_never_span_sectors() -> None:
    image = Image([Segment(0x0800_0102, random_bytes(8, 300 * KB))])  # unaligned start, sectors 0-5
    work = plan(image, F407VE, keep=False)
    for chunk in work.chunks:
        assert len(chunk.data) <= BUFFER_SIZE
        assert chunk.address % 4 == 0 and len(chunk.data) % 4 == 0
        assert chunk.address // BUFFER_SIZE == (chunk.end - 1) // BUFFER_SIZE
        assert F407VE.sector_at(chunk.address) == F407VE.sector_at(chunk.end - 1)
    assert work.chunks[0] == ProgramChunk(0x0800_0100, b"\xff\xff" + image.data_at(0x0800_0102, BUFFER_SIZE - 0x102))


def test_long_runs_of_ff_are_not_sent() -> None:
    data = b"\x11" * 1000 + b"\xff" * (8 * KB) + b"\x22" * 1000
    work = plan(Image.from_bytes(data), F407VE, keep=False)
    assert [(c.address, len(c.data)) for c in work.chunks] == [(0x0800_0000, 1000), (0x0800_0000 + 1000 + 8 * KB,
                                                                                     1000)]


def test_short_runs_of_ff_are_sent_inside_one_chunk() -> None:
    data = b"\x11" * 1000 + b"\xff" * 64 + b"\x22" * 1000
    work = plan(Image.from_bytes(data), F407VE, keep=False)
    assert [(c.address, c.data) for c in work.chunks] == [(0x0800_0000, data)]


def test_each_erase_comes_right_before_its_sectors_chunks_in_address_order() -> None:
    image = Image.from_bytes(random_bytes(9, 96 * KB))  # sectors 0-3 16 KB, sector 4 64 KB
    ops = list(plan(image, F407VE, keep=False).operations())
    erased: List[int] = []
    for op in ops:
        if isinstance(op, Erase):
            erased.append(op.sector.index)
        else:  # a chunk comes after its own sector's erase and before the next one
            assert F407VE.sector_at(op.address) == sector(F407VE, erased[-1])
    assert erased == [0, 1, 2, 3, 4]
    addresses = [op.sector.start if isinstance(op, Erase) else op.address for op in ops]
    assert addresses == sorted(addresses)


# --- one mass erase instead of the sector erases ----------------------------------------------------------------

def _other_data(part: Part, seed: int) -> NorFlash:
    return NorFlash(part, random_bytes(seed, part.flash_size))


def test_rewriting_every_sector_of_a_1mb_part_is_one_mass_erase() -> None:
    """DS8626 typical at x32: MER 8 s, the twelve sector erases 8.55 s."""
    target = _other_data(F407VG, 40)
    image = Image.from_bytes(random_bytes(41, F407VG.flash_size))
    work = plan(image, F407VG, target_crc=target.crc, read_back=target.read_back)
    ops = list(work.operations())
    assert work.mass_erase and ops[0] == MassErase(F407VG)
    assert not any(isinstance(op, (Erase, MassErase)) for op in ops[1:])
    assert work.erased_sectors == F407VG.sectors and work.bytes_erased == F407VG.flash_size
    target.run(work)
    assert bytes(target.memory) == image.data_at(FLASH_START, F407VG.flash_size)
    assert floor_seconds(work.erased_sectors, 0, protocol.PSIZE_X32) == 8.0


def test_a_512k_part_is_erased_sector_by_sector_which_is_faster() -> None:
    target = _other_data(F407VE, 42)
    image = Image.from_bytes(random_bytes(43, F407VE.flash_size))
    work = plan(image, F407VE, target_crc=target.crc, read_back=target.read_back)
    assert not work.mass_erase  # 4.55 s of sector erases against 8 s for MER
    assert [op.sector.index for op in work.operations() if isinstance(op, Erase)] == list(range(8))


def test_a_kept_byte_or_an_unchanged_sector_rules_out_the_mass_erase() -> None:
    target = _other_data(F407VG, 44)
    almost = Image.from_bytes(random_bytes(45, F407VG.flash_size - 4))  # keeps the last 4 bytes
    assert not plan(almost, F407VG, target_crc=target.crc, read_back=target.read_back).mass_erase
    image = bytearray(random_bytes(46, F407VG.flash_size))
    image[:16 * KB] = target.read(FLASH_START, 16 * KB)  # sector 0 already holds its new contents
    work = plan(Image.from_bytes(bytes(image)), F407VG, target_crc=target.crc, read_back=target.read_back)
    assert not work.mass_erase and work.sectors[0].action is Action.SKIP


def test_the_mass_erase_is_chosen_only_when_it_is_faster_than_the_erases_needed() -> None:
    image = Image.from_bytes(random_bytes(47, F407VG.flash_size))
    target = _other_data(F407VG, 48)
    assert not plan(image, F407VG, target_crc=target.crc, read_back=target.read_back,
                    psize=protocol.PSIZE_X16).mass_erase  # x16: 11 s either way
    target.write(FLASH_START, b"\xff" * 16 * KB)  # sector 0 blank: 8.3 s of erases left, still more than 8 s
    assert plan(image, F407VG, target_crc=target.crc, read_back=target.read_back).mass_erase
    target.write(sector(F407VG, 11).start, b"\xff" * 128 * KB)  # sector 11 blank too: 7.3 s, less than 8 s
    assert not plan(image, F407VG, target_crc=target.crc, read_back=target.read_back).mass_erase


def test_describe_has_a_line_per_touched_sector_with_its_reason() -> None:
    flash = NorFlash(F407VE)
    flash.write(0x0800_4000, b"old")
    image = Image([Segment(0x0800_0000, b"a" * 16 * KB + b"b" * 8)], source="app.hex")
    text = plan(image, F407VE, target_crc=flash.crc, read_back=flash.read_back).describe()
    lines = text.splitlines()
    assert lines[0] == ("app.hex -> STM32F407VE: 2 sectors touched, 1 erased (16 KB), 0 unchanged (0 KB), "
                        f"16,392 bytes to program in {16 * KB // BUFFER_SIZE + 1} chunks, 16,376 bytes kept")
    assert lines[1].startswith("  sector  0 0x08000000  16 KB  program")
    assert "already erased" in lines[1]
    assert lines[2].startswith("  sector  1 0x08004000  16 KB  erase+program")
    assert "changed: target CRC" in lines[2] and "keeps 16,376 bytes outside the image" in lines[2]


# --- invariants -----------------------------------------------------------------------------------------------

REGION = 192 * KB  # sectors 0-5 of an F407VE: every sector size occurs
_SECTORS = [s for s in F407VE.sectors if s.end <= FLASH_START + REGION]


@st.composite
def scenarios(draw: st.DrawFn) -> Tuple[Image, Dict[int, str], int, bool, bool]:
    """An image of a few segments in sectors 0-5, what each sector held before, and the plan's options."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    segments: List[Tuple[int, bytes]] = []
    for _ in range(draw(st.integers(1, 5))):
        start = draw(st.integers(0, REGION - 1))
        length = draw(st.integers(1, min(40 * KB, REGION - start)))
        fill = draw(st.sampled_from(["random", "ff", "mixed"]))
        piece = bytearray(b"\xff" * length if fill == "ff" else rng.randbytes(length))
        if fill == "mixed":
            cut = rng.randrange(length)
            piece[cut:] = b"\xff" * (length - cut)
        segments.append((start, bytes(piece)))
    # Later segments overwrite earlier ones where they overlap: merge them into a consistent image.
    memory, covered = bytearray(REGION), bytearray(REGION)
    for start, data in segments:
        memory[start:start + len(data)] = data
        covered[start:start + len(data)] = b"\x01" * len(data)
    runs = [Segment(FLASH_START + m.start(), bytes(memory[m.start():m.end()]))
            for m in re.finditer(b"\x01+", covered)]
    before = {s.index: draw(st.sampled_from(["blank", "old", "same"])) for s in _SECTORS}
    return Image(runs), before, seed, draw(st.booleans()), draw(st.booleans())


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_running_the_plan_leaves_image_plus_kept_bytes_and_nothing_else(
        case: Tuple[Image, Dict[int, str], int, bool, bool]) -> None:
    image, before, seed, keep, ask_crc = case
    flash = NorFlash(F407VE, random_bytes(seed, F407VE.flash_size))
    for index, state in before.items():
        s = sector(F407VE, index)
        if state == "blank":
            flash.write(s.start, b"\xff" * s.size)
        elif state == "same":  # what the sector should hold after the plan
            outside = flash.read(s.start, s.size) if keep else b"\xff" * s.size
            merged = bytearray(outside)
            for a, b in image.ranges(s.start, s.end):
                merged[a - s.start:b - s.start] = image.data_at(a, b - a)
            flash.write(s.start, bytes(merged))
    original = bytes(flash.memory)

    work = plan(image, F407VE, keep=keep, target_crc=flash.crc if ask_crc else None, read_back=flash.read_back)
    touched = [sp.sector for sp in work.sectors]
    expected = bytearray(original)  # flash afterwards: the image, kept or erased bytes around it, rest as was
    for s in touched:
        if not keep:
            expected[s.start - FLASH_START:s.end - FLASH_START] = b"\xff" * s.size
        for a, b in image.ranges(s.start, s.end):
            expected[a - FLASH_START:b - FLASH_START] = image.data_at(a, b - a)

    def wanted(s: Sector) -> bytes:
        return bytes(expected[s.start - FLASH_START:s.end - FLASH_START])

    # Touched sectors are exactly those holding image bytes.
    assert touched == [s for s in F407VE.sectors if next(image.ranges(s.start, s.end), None)]
    # Every chunk holds exactly the bytes its range must end up with; nothing else that must change is left out.
    for chunk in work.chunks:
        assert chunk.data == bytes(expected[chunk.address - FLASH_START:chunk.end - FLASH_START])
    for sp in work.sectors:
        sent = {a for c in sp.chunks for a in range(c.address, c.end)}
        must = {sp.sector.start + i for i, v in enumerate(wanted(sp.sector)) if v != 0xFF}
        assert sp.action is Action.SKIP or must <= sent
    # Skips only where asked and the sector already holds its new contents; program-only only on blank sectors.
    for sp in work.sectors:
        held = original[sp.sector.start - FLASH_START:sp.sector.end - FLASH_START]
        assert sp.crc == stm32_crc32(wanted(sp.sector))
        if sp.action is Action.SKIP:
            assert ask_crc and held == wanted(sp.sector)
        if sp.action is Action.PROGRAM:
            assert ask_crc and held == b"\xff" * sp.sector.size
    # Totals agree with the sectors.
    assert work.bytes_erased == sum(sp.sector.size for sp in work.sectors if sp.action is Action.ERASE)
    assert work.bytes_programmed == sum(len(c.data) for c in work.chunks)

    flash.run(work)
    assert bytes(flash.memory) == bytes(expected)  # every rewritten sector complete, untouched ones unchanged
