"""`Session.program` on the virtual chip, for random images: what was asked for is in flash, byte for byte, and
nothing else changed.

Hypothesis chooses the image (address, size, bytes: often across sector boundaries, any alignment) and what
each sector held before (erased, or other data). After programming through the product path (sector CRCs,
plan, stub stream, CRC verify) over the ideal link, the flash must hold: the image where the image is; in
the sectors the image touches, the bytes they held before everywhere else (f4load keeps them); every other
sector unchanged.
"""
from __future__ import annotations

import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from f4load.image import load_image
from f4load.part import FLASH_START, KB, sectors_for
from f4load.session import Session
from f4load.sim import state as sim_state

FLASH_SIZE = 512 * KB
SECTORS = sectors_for(FLASH_SIZE)
# Places near which images start: sector boundaries (and the flash start), so that most examples cross one.
BOUNDARIES = [s.start for s in SECTORS[1:]]


@st.composite
def images(draw: st.DrawFn) -> tuple:
    """(address, data): up to 40 KB, starting at any alignment within 20 KB before a sector boundary (or
    anywhere), never past the end of the 512 KB flash."""
    if draw(st.booleans()):
        address = max(FLASH_START, draw(st.sampled_from(BOUNDARIES)) - draw(st.integers(0, 20 * KB)))
    else:
        address = FLASH_START + draw(st.integers(0, FLASH_SIZE - 1))
    size = draw(st.integers(1, min(40 * KB, FLASH_START + FLASH_SIZE - address)))
    seed = draw(st.integers(0, 2**32 - 1))
    return address, random.Random(seed).randbytes(size)


@st.composite
def previous_flash(draw: st.DrawFn) -> bytes:
    """512 KB as the chip held it before: each sector erased or full of other data."""
    seed = draw(st.integers(0, 2**32 - 1))
    filled = draw(st.lists(st.booleans(), min_size=len(SECTORS), max_size=len(SECTORS)))
    rng = random.Random(seed)
    return b"".join(rng.randbytes(s.size) if full else b"\xff" * s.size for s, full in zip(SECTORS, filled))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(image=images(), before=previous_flash())
def test_random_image_reads_back_exactly_and_the_rest_of_touched_sectors_is_kept(image, before, sim_state_dir,
                                                                                 tmp_path: Path):
    address, data = image
    chip = sim_state.reset_state(sim_state_dir)
    chip.flash[:FLASH_SIZE] = before
    sim_state.save_state(chip, sim_state_dir)
    path = tmp_path / "app.bin"
    path.write_bytes(data)

    with Session(probe="sim", sim_link="ideal") as session:
        outcome = session.program(load_image(str(path), address=address))
    assert outcome.verified

    after = bytes(sim_state.load_state(sim_state_dir).flash[:FLASH_SIZE])
    offset = address - FLASH_START
    expected = bytearray(before)
    expected[offset:offset + len(data)] = data
    assert after[offset:offset + len(data)] == data
    assert after == bytes(expected)  # touched sectors keep their other bytes; other sectors unchanged
