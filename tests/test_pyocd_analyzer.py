"""The pyocd route's reliability (issue 10): pyocd's CRC analyzer by the stub, FLASH_CR locked after every
failure, and an image larger than the part refused against F_SIZE (f4load.pyocd_targets, docs/pyocd.md).

pyocd's own Session, FileProgrammer, FlashBuilder and Flash run the real stub on the virtual chip; the
`pyocd` command line runs in a subprocess where the point is what a user of `pyocd flash` sees.
"""
from __future__ import annotations

import io
import logging
import random
import re
import zlib
from pathlib import Path
from typing import Any, List, Tuple

import pytest
from pyocd.core.exceptions import FlashEraseFailure, FlashFailure, FlashProgramFailure
from pyocd.flash.builder import FlashBuilder
from pyocd.flash.file_programmer import FileProgrammer

from f4load import registers as reg
from f4load.part import FLASH_START, KB
from f4load.pyocd_targets import PAGE_SIZE, TRUST_CRC_OPTION, F4LoadFlash, register_targets
from f4load.sim import state as sim_state

LINK = "ideal"  # function, not time: docs/pyocd.md and the bench measure time
XE = "f4load_stm32f407xe"
XG = "f4load_stm32f407xg"


@pytest.fixture(autouse=True)
def f4load_targets() -> None:
    register_targets()


def image(size: int, seed: int = 10) -> bytes:
    return random.Random(seed).randbytes(size)


def quiet(progress: float) -> None:
    """A FileProgrammer progress callback that prints nothing."""


def program(session: Any, data: bytes, address: int = FLASH_START, **options: Any) -> None:
    FileProgrammer(session, progress=quiet, **options).program(io.BytesIO(data), base_address=address,
                                                               file_format="bin")


def main_flash(session: Any) -> F4LoadFlash:
    flash = session.target.memory_map.get_boot_memory().flash
    assert isinstance(flash, F4LoadFlash)
    return flash


def chip_holding(directory: Path, data: bytes, flash_kb: int = 512) -> None:
    """Make the virtual chip in `directory` hold `data` from FLASH_START (the rest erased)."""
    from f4load.sim.faults import Faults

    chip = sim_state.reset_state(directory, Faults(flash_kb=flash_kb))
    chip.flash[:len(data)] = data
    sim_state.save_state(chip, directory)


def flash_cr(session: Any) -> int:
    return session.target.read32(reg.FLASH_CR)


def builder_performance(session: Any, monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    """Collect the ProgrammingInfo of every FlashBuilder.program call (a spy that passes the call on)."""
    infos: List[Any] = []
    original = FlashBuilder.program

    def spy(self: FlashBuilder, *args: Any, **kwargs: Any) -> Any:
        info = original(self, *args, **kwargs)
        infos.append(info)
        return info

    monkeypatch.setattr(FlashBuilder, "program", spy)
    return infos


# --- compute_crcs: zlib's CRC-32 by the chip's CRC unit ---------------------------------------------------
RANGES: List[Tuple[int, int]] = [
    (FLASH_START, 16 * KB),               # pyocd's page (PAGE_SIZE)
    (FLASH_START + 0x4000, 8 * KB),       # the other page sizes docs/pyocd.md measured
    (FLASH_START + 0x6000, 4 * KB),
    (FLASH_START + 0x2_0000, 128 * KB),   # a whole 128 KB sector
    (FLASH_START + 0x1_0000, 64 * KB),    # sector 4 (64 KB), erased bytes
    (FLASH_START + 0x10, 0),              # nothing: zlib.crc32(b"") == 0
    (FLASH_START + 0x20, 1),              # lengths that are not multiples of 4: the tail in software
    (FLASH_START + 0x24, 2),
    (FLASH_START + 0x28, 3),
    (FLASH_START + 0x2C, 4093),
    (FLASH_START + 0x7_FFFC, 4),          # the last word of a 512 KB part
]


def test_compute_crcs_matches_zlib_crc32_of_the_flash_contents(open_session):
    session = open_session(LINK, target_override=XE)
    program(session, image(64 * KB) + b"\xff" * (64 * KB) + image(128 * KB, seed=11), keep_unwritten=True)
    program(session, image(4, seed=12), FLASH_START + 0x7_FFFC, keep_unwritten=True)
    flash = main_flash(session)
    flash.init(flash.Operation.VERIFY)  # what pyocd's builder does before it asks (_enable_read_access)
    crcs = flash.compute_crcs(RANGES)
    flash.cleanup()
    contents = bytes(session.target.read_memory_block8(FLASH_START, 512 * KB))
    assert crcs == [zlib.crc32(contents[a - FLASH_START:a - FLASH_START + n]) for a, n in RANGES]
    assert flash_cr(session) & reg.FLASH_CR_LOCK  # Init for VERIFY never unlocked it


def test_compute_crcs_takes_more_ranges_than_one_page_buffer_holds(open_session):
    session = open_session(LINK, target_override=XE)
    program(session, image(32 * KB, seed=13))
    flash = main_flash(session)
    ranges = [(FLASH_START + 8 * i, 5 + i % 11) for i in range(PAGE_SIZE // 12 + 100)]  # two ZlibCrc calls
    flash.init(flash.Operation.VERIFY)
    crcs = flash.compute_crcs(ranges)
    flash.cleanup()
    contents = bytes(session.target.read_memory_block8(FLASH_START, 32 * KB))
    assert crcs == [zlib.crc32(contents[a - FLASH_START:a - FLASH_START + n]) for a, n in ranges]


def test_an_unaligned_crc_range_is_refused_by_the_stub_with_a_message(open_session):
    session = open_session(LINK, target_override=XE)
    flash = main_flash(session)
    flash.init(flash.Operation.VERIFY)
    with pytest.raises(FlashFailure) as failure:
        flash.compute_crcs([(FLASH_START + 2, 16)])
    assert "ZlibCrc failed" in str(failure.value) and "0x08000002" in str(failure.value)


# --- smart flash with the analyzer ---------------------------------------------------------------------------
def count_flash_reads(session: Any, monkeypatch: pytest.MonkeyPatch) -> List[int]:
    """Sizes of pyocd's byte reads of memory in this session (a spy that passes the call on)."""
    sizes: List[int] = []
    target = session.target
    original = target.read_memory_block8

    def spy(addr: int, size: int, *args: Any, **kwargs: Any) -> Any:
        sizes.append(size)
        return original(addr, size, *args, **kwargs)

    monkeypatch.setattr(target, "read_memory_block8", spy)
    return sizes


def test_an_identical_image_is_skipped_page_by_page_on_the_crcs_alone(open_session, sim_state_dir, monkeypatch):
    data = image(128 * KB, seed=14)
    chip_holding(sim_state_dir, data)
    session = open_session(LINK, target_override=XE)
    infos = builder_performance(session, monkeypatch)
    reads = count_flash_reads(session, monkeypatch)
    program(session, data)
    (info,) = infos
    assert info.analyze_type == FlashBuilder.FLASH_ANALYSIS_CRC32
    assert (info.program_byte_count, info.skipped_page_count, info.erase_sector_count) == (0, 8, 0)
    assert sum(reads) == 0  # the target type trusts the CRCs (fast_program): no page read back to confirm


def test_a_changed_page_is_found_by_its_crc_and_only_its_sector_is_rewritten(open_session, sim_state_dir,
                                                                            monkeypatch):
    old = image(128 * KB, seed=15)
    chip_holding(sim_state_dir, old)
    new = bytearray(old)
    new[0x4123] ^= 0x01  # one bit in sector 1 (16 KB: one page)
    session = open_session(LINK, target_override=XE)
    infos = builder_performance(session, monkeypatch)
    program(session, bytes(new))
    (info,) = infos
    assert info.analyze_type == FlashBuilder.FLASH_ANALYSIS_CRC32
    assert (info.erase_sector_count, info.program_page_count, info.skipped_page_count) == (1, 1, 7)
    assert bytes(session.target.read_memory_block8(FLASH_START, len(new))) == bytes(new)


def test_the_user_can_still_ask_pyocd_to_confirm_matching_crcs_by_reading(open_session, sim_state_dir,
                                                                          monkeypatch):
    data = image(32 * KB, seed=16)
    chip_holding(sim_state_dir, data)
    session = open_session(LINK, target_override=XE, **{TRUST_CRC_OPTION: False})  # -O fast_program=false
    infos = builder_performance(session, monkeypatch)
    reads = count_flash_reads(session, monkeypatch)
    program(session, data)
    (info,) = infos
    assert info.analyze_type == FlashBuilder.FLASH_ANALYSIS_CRC32
    assert (info.program_byte_count, info.skipped_page_count) == (0, 2)
    assert sum(reads) == len(data)  # the CRCs matched, and pyocd read both pages to confirm


def test_pyocd_flash_skips_every_page_of_an_identical_512k_image(run_pyocd, sim_state_dir, tmp_path):
    data = image(512 * KB, seed=17)
    chip_holding(sim_state_dir, data)
    (tmp_path / "app.bin").write_bytes(data)
    result = run_pyocd("flash", "-u", "f4sim", str(tmp_path / "app.bin"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"Erased 0 bytes \(0 sectors\), programmed 0 bytes \(0 pages\), identical 524288 bytes "
                     r"\(32 pages\)", output), output
    assert bytes(sim_state.load_state(sim_state_dir).flash) == data


# --- FLASH_CR locked after every failure ---------------------------------------------------------------------
def test_flash_cr_is_locked_after_a_failed_erase(open_session, monkeypatch):
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", "wrp=1")
    session = open_session(LINK, target_override=XE)
    with pytest.raises(FlashEraseFailure, match="EraseSector failed on sector 1"):
        program(session, image(48 * KB))
    assert flash_cr(session) & reg.FLASH_CR_LOCK
    assert not main_flash(session).is_initialized


def test_flash_cr_is_locked_after_a_failed_program(open_session):
    session = open_session(LINK, target_override=XE)
    program(session, image(16 * KB, seed=18))
    flash = main_flash(session)
    flash.init(flash.Operation.PROGRAM)
    assert not flash_cr(session) & reg.FLASH_CR_LOCK
    with pytest.raises(FlashProgramFailure, match="ProgramPage failed on sector 0"):
        flash.program_page(FLASH_START, list(image(16 * KB, seed=19)))  # not erased: refused, nothing written
    assert flash_cr(session) & reg.FLASH_CR_LOCK


def test_after_a_failure_a_retry_initialises_the_algorithm_again(open_session, monkeypatch):
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", "sticky=PGSERR wrp=5")
    session = open_session(LINK, target_override=XE)
    with pytest.raises(FlashEraseFailure):
        program(session, image(160 * KB, seed=20))  # sectors 0-5: sector 5 is protected
    data = image(32 * KB, seed=21)
    program(session, data)
    assert bytes(session.target.read_memory_block8(FLASH_START, len(data))) == data
    assert flash_cr(session) & reg.FLASH_CR_LOCK


def test_flash_cr_stays_unlocked_when_bsy_never_clears_and_the_log_says_reset(open_session, monkeypatch, caplog):
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", "bsy-stuck")
    session = open_session(LINK, target_override=XE)
    with caplog.at_level(logging.WARNING, logger="f4load.pyocd_targets"):
        with pytest.raises(FlashEraseFailure, match="BSY_TIMEOUT"):
            program(session, image(16 * KB))
    assert session.target.read32(reg.FLASH_SR) & reg.FLASH_SR_BSY
    # RM0090 3.6: no CR write while BSY is set; UnInit declined, and says what to do.
    assert not flash_cr(session) & reg.FLASH_CR_LOCK
    assert "FLASH_CR left unlocked" in caplog.text and "reset the chip" in caplog.text


def test_a_session_that_ends_with_the_algorithm_initialised_locks_flash_cr(open_session):
    session = open_session(LINK, target_override=XE)
    flash = main_flash(session)
    flash.init(flash.Operation.ERASE)  # as if the host stopped between two calls
    chip = session.probe.chip
    assert not chip.bus_read(reg.FLASH_CR, 4) & reg.FLASH_CR_LOCK
    session.target.disconnect(resume=False)
    assert chip.bus_read(reg.FLASH_CR, 4) & reg.FLASH_CR_LOCK


def test_flash_cr_is_locked_after_pyocd_flash_fails(run_pyocd, sim_state_dir, tmp_path):
    """pyocd's command line, a write-protected sector: the failure, and pyocd ends with CR locked."""
    (tmp_path / "app.bin").write_bytes(image(48 * KB))
    result = run_pyocd("flash", "-u", "f4sim", "-L", "f4load.pyocd_targets=debug", str(tmp_path / "app.bin"),
                       faults="wrp=1")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "EraseSector failed on sector 1" in output
    assert "f4load: FLASH_CR locked after the failure" in output, output
    assert "could not lock" not in output and "left unlocked" not in output


# --- the image against F_SIZE ------------------------------------------------------------------------------
def test_an_image_larger_than_the_part_is_refused_before_anything_is_erased(run_pyocd, sim_state_dir, tmp_path):
    before = image(512 * KB, seed=22)
    chip_holding(sim_state_dir, before)
    (tmp_path / "big.bin").write_bytes(image(600 * KB, seed=23))
    result = run_pyocd("flash", "-u", "f4sim", "-t", XG, str(tmp_path / "big.bin"))
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    errors = [line for line in output.splitlines() if " C " in line]
    assert len(errors) == 1, output
    error = errors[0]
    assert "the image reaches 0x08080000-0x08095FFF" in error
    assert "F_SIZE (0x1FFF7A22) says 512 KB (0x08000000-0x0807FFFF)" in error
    assert "nothing was erased" in error and "Link the image to fit 512 KB" in error
    assert "Memory transfer fault" not in output
    assert f"target type {XG} maps 1024 KB: use {XE}" in output  # the warning at connect
    assert bytes(sim_state.load_state(sim_state_dir).flash) == before


def test_the_too_large_error_comes_from_pyocds_own_api_too(open_session, monkeypatch):
    session = open_session(LINK, target_override=XG)  # a 512 KB chip
    with pytest.raises(FlashFailure, match=r"F_SIZE \(0x1FFF7A22\) says 512 KB") as failure:
        program(session, image(4 * KB), FLASH_START + 0x7_F800)
    assert "0x08080000-0x080807FF" in str(failure.value)
    assert f"a 1 MB part (STM32F407xG, target type {XG})" in str(failure.value)


def test_a_target_type_smaller_than_the_part_names_the_right_one(open_session, monkeypatch, caplog):
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", "flash=1024")
    with caplog.at_level(logging.WARNING, logger="f4load.pyocd_targets"):
        open_session(LINK, target_override=XE)
    assert f"this part has 1024 KB of flash (F_SIZE), target type {XE} maps 512 KB: use {XG}" in caplog.text
