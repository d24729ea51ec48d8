"""The program job as one batch (f4load.job): kept bytes copied on the target, read out of RAM into the backup before
their sector's erase, restored from RAM; unchanged partly covered sectors skipped without reading the bytes kept
around the image; a mass erase that keeps bytes through RAM."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import bincopy
import pytest

from f4load.image import Image, load_image
from f4load.part import FLASH_START, KB, sectors_for
from f4load.session import Session
from f4load.sim import faults
from f4load.sim import state as sim_state
from f4load.sim.faults import Faults

SECTORS = sectors_for(512 * KB)
SECTORS_1M = sectors_for(1024 * KB)


def _chip(directory: Path, flash_kb: int = 512, seed: int = 1) -> bytes:
    chip = sim_state.reset_state(directory, faults=Faults(flash_kb=flash_kb))
    chip.flash[:] = random.Random(seed).randbytes(flash_kb * KB)
    sim_state.save_state(chip, directory)
    return bytes(chip.flash)


def _hex(path: Path, segments: Sequence[Tuple[int, bytes]]) -> Image:
    records = bincopy.BinFile()
    for address, data in segments:
        records.add_binary(data, address=address)
    path.write_text(records.as_ihex())
    return load_image(str(path))


def _expected(before: bytes, segments: Sequence[Tuple[int, bytes]]) -> bytes:
    out = bytearray(before)
    for address, data in segments:
        out[address - FLASH_START:address - FLASH_START + len(data)] = data
    return bytes(out)


def _stored(directory: Path) -> bytes:
    """The flash as the virtual chip saved it when its session closed."""
    return bytes(sim_state.load_state(directory, use_environment=False).flash)


class _Reads:
    """Debugger reads through the target: of main flash, and of the stub's buffers (SRAM after the queue, CCM)."""

    def __init__(self, session: Session) -> None:
        self.flash_bytes = self.buffer_bytes = 0
        target = session.target
        read = target.read_memory_block32
        buffers = session.stub_image.layout().buffers[0]

        def counting(address: int, count: int) -> Any:
            if FLASH_START <= address < FLASH_START + 1024 * KB:
                self.flash_bytes += 4 * count
            elif buffers <= address < 0x2002_0000 or 0x1000_0000 <= address < 0x1001_0000:
                self.buffer_bytes += 4 * count
            return read(address, count)
        target.read_memory_block32 = counting


SPARSE = ((SECTORS[0].start, 4 * KB), (SECTORS[5].start + 0x1001, 2 * KB + 3), (SECTORS[7].start + 0x10000, 256))


def _sparse(seed: int) -> List[Tuple[int, bytes]]:
    return [(address, random.Random(seed + i).randbytes(size)) for i, (address, size) in enumerate(SPARSE)]


def test_kept_bytes_cross_the_link_once_and_are_restored_from_ram(sim_state_dir: Path, tmp_path: Path) -> None:
    """Three regions in sectors 0, 5 and 7 (one starting and ending mid-word) over other data: the bytes around
    them are copied on the target, read out into the backup, and programmed back from RAM - the host uploads the
    image and reads the kept bytes once, and reads no flash before an erase but the edge words."""
    before = _chip(sim_state_dir)
    segments = _sparse(10)
    image = _hex(tmp_path / "app.hex", segments)
    with Session(probe="sim", sim_link="ideal", backup_dir=tmp_path / "backups", keep_backup=True) as session:
        reads = _Reads(session)
        probe = session.pyocd.probe
        written = probe.bytes_written
        outcome = session.program(image)
        written, read, flash_read = probe.bytes_written - written, reads.buffer_bytes, reads.flash_bytes
    flash = _stored(sim_state_dir)
    kept = 16 * KB + 128 * KB + 128 * KB - sum(len(d) for _, d in segments)
    assert flash == _expected(before, segments) and outcome.verified
    assert [s.index for s in outcome.erased] == [0, 5, 7] and outcome.bytes_kept == kept
    assert flash_read <= 16  # the two edge words of the unaligned region, nothing else
    stub = len(session.stub_image.image)
    assert written < stub + sum(len(d) for _, d in segments) + 16 * KB  # no kept byte uploaded again
    assert kept <= read < kept + 8 * KB  # every kept byte read out once (whole words), little else
    assert outcome.backup is not None
    backup = bincopy.BinFile(str(outcome.backup))
    assert sum(len(data) for _, data in backup.segments) == kept


def test_each_sectors_kept_bytes_are_in_the_backup_before_its_erase_starts(sim_state_dir: Path,
                                                                           tmp_path: Path) -> None:
    _chip(sim_state_dir, seed=2)
    image = _hex(tmp_path / "app.hex", _sparse(20))
    with Session(probe="sim", sim_link="ideal", backup_dir=tmp_path / "backups") as session:
        chip = session.pyocd.probe.chip
        backed_up_at_erase: List[Dict[int, int]] = []

        def on_operation(kind: str, phase: str) -> None:
            if kind == "erase" and phase == "start":
                files = list((tmp_path / "backups").glob("*.hex"))
                assert len(files) == 1
                backup = bincopy.BinFile(str(files[0]))
                per_sector: Dict[int, int] = {}
                for segment in backup.segments:
                    sector = next(s for s in SECTORS if s.start <= segment.minimum_address < s.end)
                    per_sector[sector.index] = per_sector.get(sector.index, 0) + len(segment.data)
                backed_up_at_erase.append(per_sector)
        chip.on_flash_operation = on_operation
        session.program(image)
    kept = {0: 12 * KB, 5: 128 * KB - (2 * KB + 3), 7: 128 * KB - 256}
    assert len(backed_up_at_erase) == 3
    for erased, backed_up in zip((0, 5, 7), backed_up_at_erase):
        assert backed_up.get(erased) == kept[erased]  # that sector's kept bytes, whole, before its erase


def test_a_partly_covered_sector_that_holds_the_image_is_skipped_without_reading_what_it_keeps(
        sim_state_dir: Path, tmp_path: Path) -> None:
    before = _chip(sim_state_dir, seed=3)
    segments = _sparse(30)
    image = _hex(tmp_path / "app.hex", segments)
    with Session(probe="sim", sim_link="ideal", backup_dir=tmp_path / "backups") as session:
        session.program(image)
        reads = _Reads(session)
        again = session.program(image)
        read, flash_read = reads.buffer_bytes, reads.flash_bytes
    flash = _stored(sim_state_dir)
    assert not again.erased and [s.index for s in again.skipped] == [0, 5, 7]
    assert flash_read <= 16 and read == 0  # the CRCs decided; no kept byte crossed the link
    assert flash == _expected(before, segments)


def test_a_changed_byte_in_a_kept_sectors_image_is_not_mistaken_for_unchanged(sim_state_dir: Path,
                                                                              tmp_path: Path) -> None:
    before = _chip(sim_state_dir, seed=4)
    segments = _sparse(40)
    with Session(probe="sim", sim_link="ideal", backup_dir=tmp_path / "backups") as session:
        session.program(_hex(tmp_path / "app.hex", segments))
        address, data = segments[1]
        changed = bytearray(data)
        changed[-1] ^= 0x01  # the last byte, in the edge word the image shares with kept bytes
        segments[1] = (address, bytes(changed))
        outcome = session.program(_hex(tmp_path / "app2.hex", segments))
    flash = _stored(sim_state_dir)
    assert [s.index for s in outcome.erased] == [5]
    assert flash == _expected(before, segments)


def test_a_mass_erase_keeps_bytes_through_ram_when_they_fit(sim_state_dir: Path, tmp_path: Path) -> None:
    """A 1 MB part rewritten whole but for 100 bytes at the end of sector 3 and of sector 11: the kept bytes fit
    two buffers, so one mass erase still replaces the twelve sector erases."""
    before = _chip(sim_state_dir, flash_kb=1024, seed=5)
    image = bytearray(b"\xff" * 1024 * KB)
    for s in SECTORS_1M:
        image[s.start - FLASH_START:s.start - FLASH_START + 64] = random.Random(s.index).randbytes(64)
    holes = [(SECTORS_1M[3].end - 100, SECTORS_1M[3].end), (SECTORS_1M[11].end - 100, SECTORS_1M[11].end)]
    segments = []
    at = FLASH_START
    for a, b in holes:
        segments.append((at, bytes(image[at - FLASH_START:a - FLASH_START])))
        at = b
    with Session(probe="sim", sim_link="ideal", backup_dir=tmp_path / "backups") as session:
        outcome = session.program(Image([_segment(a, d) for a, d in segments]))
        erases = session.pyocd.probe.chip.flash.operation_counts["erase"]
    flash = _stored(sim_state_dir)
    assert outcome.plan is not None and outcome.plan.mass_erase and erases == 1
    assert outcome.bytes_kept == 200 and flash == _expected(before, segments)


def _segment(address: int, data: bytes) -> Any:
    from f4load.image import Segment

    return Segment(address, data)


def test_a_write_protected_sector_among_kept_ones_stops_the_job_before_any_erase(sim_state_dir: Path,
                                                                                  tmp_path: Path) -> None:
    from f4load.session import ProtectionError

    before = _chip(sim_state_dir, seed=6)
    faults.inject(str(sim_state_dir), "wrp=7")
    with Session(probe="sim", sim_link="ideal", backup_dir=tmp_path / "backups") as session:
        with pytest.raises(ProtectionError):
            session.program(_hex(tmp_path / "app.hex", _sparse(60)))
        assert session.pyocd.probe.chip.flash.operation_counts["erase"] == 0
    assert _stored(sim_state_dir) == before
