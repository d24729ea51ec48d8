"""Mass erase (RM0090 3.6.3, FLASH_CR.MER): the stub's stream command, the refusal of a write-protected sector
before MER starts, and the session choosing it where it is faster (a 1 MB part, DS8626 Table 40 typical: 8 s
against 8.55 s of sector erases at x32) for `erase --chip` and for a program that rewrites every sector."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterator, Tuple

import pytest

from f4load import registers
from f4load.image import Image
from f4load.part import FLASH_START, KB, sectors_for
from f4load.session import ProtectionError, Session
from f4load.sim import faults
from f4load.sim import state as sim_state
from f4load.sim.faults import Faults
from f4load.stream import EraseChip, StreamCommandError, run_stream
from f4load.stub_image import StubImage

MB = 1024 * KB
SECTORS_1M = sectors_for(MB)


def _chip_with_data(directory: Path, flash_kb: int, seed: int, protected: Tuple[int, ...] = ()) -> bytes:
    """A state directory holding a part of `flash_kb` KB full of other data (some sectors write-protected)."""
    chip = sim_state.reset_state(directory, faults=Faults(flash_kb=flash_kb))
    contents = random.Random(seed).randbytes(flash_kb * KB)
    chip.flash[:] = contents
    sim_state.save_state(chip, directory)
    if protected:
        faults.inject(str(directory), "wrp=" + ",".join(str(i) for i in protected))
    return contents


def _erases(session: Session) -> int:
    """Erase operations (sector or mass) the virtual flash started since the session opened."""
    return int(session.pyocd.probe.chip.flash.operation_counts["erase"])


@pytest.fixture
def session_on(sim_state_dir: Path) -> Iterator[Any]:
    opened = []

    def open_(flash_kb: int, seed: int, protected: Tuple[int, ...] = ()) -> Tuple[Session, bytes]:
        contents = _chip_with_data(sim_state_dir, flash_kb, seed, protected)
        session = Session(probe="sim", sim_link="ideal")
        session.open()
        opened.append(session)
        return session, contents

    yield open_
    for session in opened:
        session.close()


def _flash(session: Session) -> bytes:
    assert session.info is not None
    return session.read(FLASH_START, session.info.part.flash_size)


def test_the_stream_command_mass_erases_every_sector(session_on):
    session, _ = session_on(1024, seed=1)
    report = run_stream(session.target, StubImage.shipped(), [EraseChip(MB)])
    assert report.sectors_erased == 12
    assert _flash(session) == b"\xff" * MB
    assert _erases(session) == 1


def test_a_write_protected_sector_makes_the_stub_refuse_the_mass_erase_before_it_starts(session_on):
    """MER with a protected sector fails with WRPERR (RM0090 3.7.4); the stub refuses before it starts and names
    the first protected sector."""
    session, contents = session_on(1024, seed=2, protected=(3, 7))
    with pytest.raises(StreamCommandError) as caught:
        run_stream(session.target, StubImage.shipped(), [EraseChip(MB)])
    error = caught.value
    assert (error.operation, error.sector, error.sr_names) == ("EraseChip", 3, ["WRPERR"])
    assert "sector 3 is write-protected (the first such sector): a mass erase needs every sector" in str(error)
    assert _erases(session) == 0 and _flash(session) == contents
    assert session.target.read32(registers.FLASH_CR) & registers.FLASH_CR_LOCK


def test_erase_chip_of_a_1mb_part_is_one_mass_erase(session_on):
    session, _ = session_on(1024, seed=3)
    outcome = session.erase(list(range(12)))
    assert _erases(session) == 1
    assert [s.index for s in outcome.erased] == list(range(12))
    assert _flash(session) == b"\xff" * MB


def test_erase_chip_of_a_512k_part_goes_sector_by_sector(session_on):
    session, _ = session_on(512, seed=4)
    session.erase(list(range(8)))
    assert _erases(session) == 8  # 4.55 s of sector erases beat the 8 s of a mass erase
    assert _flash(session) == b"\xff" * 512 * KB


def test_a_protected_sector_refuses_erase_chip_before_anything_is_erased(session_on):
    session, contents = session_on(1024, seed=5, protected=(9,))
    with pytest.raises(ProtectionError) as caught:
        session.erase(list(range(12)))
    assert "sector 9 is write-protected" in str(caught.value) and "nothing was erased" in str(caught.value)
    assert _erases(session) == 0 and _flash(session) == contents


def test_programming_every_sector_of_a_1mb_part_uses_one_mass_erase(session_on):
    """A 1 MB image (mostly 0xFF: little to program) over other data in every sector: nothing is kept, so one
    mass erase replaces the twelve sector erases."""
    session, _ = session_on(1024, seed=6)
    image = bytearray(b"\xff" * MB)
    for s in SECTORS_1M:
        image[s.start - FLASH_START:s.start - FLASH_START + 64] = random.Random(s.index).randbytes(64)
    outcome = session.program(Image.from_bytes(bytes(image)))
    assert outcome.plan is not None and outcome.plan.mass_erase
    assert _erases(session) == 1 and outcome.verified
    assert [s.index for s in outcome.erased] == list(range(12))
    assert _flash(session) == bytes(image)
