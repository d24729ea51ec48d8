"""Streaming: the stub's Stream() entry point keeps running while the host feeds it, through unmodified pyocd
on the virtual STM32F407 (f4sim probe). Function on the ideal link; one measurement on the stlink-v2 link."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from f4load import protocol, registers
from f4load.crc import stm32_crc32
from f4load.part import FLASH_START, KB, sectors_for
from f4load.sim import faults
from f4load.stream import (
    Crc,
    EraseSector,
    LinkLostError,
    Program,
    StreamCommandError,
    TargetResetError,
    run_stream,
)
from f4load.stub_image import StubImage

STUB = StubImage.shipped()
SECTORS = sectors_for(512 * KB)
FLOOR_512K_S = 6.65  # erase sectors 0-7 + program 512 KB at x32, DS8626 typical (the digest)


def _random(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _read_flash(session: Any, address: int, size: int) -> bytes:
    return bytes(session.target.read_memory_block8(address, size))


def _open_with_faults(open_session: Any, state_dir: Path, spec: str, link: str = "ideal") -> Any:
    faults.inject(str(state_dir), spec)
    return open_session(link)


def test_random_data_across_sectors_reads_back_exactly(sim_session):
    # Starts and ends off word alignment and crosses the sector 0/1 boundary and several buffers.
    start = SECTORS[0].start + 0x3001
    data = _random(SECTORS[1].end - start - 0x1003, seed=1)
    run_stream(sim_session.target, STUB, [EraseSector(0), EraseSector(1), Program(start, data)])
    assert _read_flash(sim_session, start, len(data)) == data
    assert _read_flash(sim_session, FLASH_START, start - FLASH_START) == b"\xff" * (start - FLASH_START)
    assert _read_flash(sim_session, start + len(data), 0x1003) == b"\xff" * 0x1003


def test_report_counts_commands_bytes_and_virtual_time(sim_session):
    data = _random(3 * protocol.const("F4LOAD_BUFFER_SIZE") + 100, seed=2)
    report = run_stream(sim_session.target, STUB, [EraseSector(0), Program(FLASH_START, data)])
    assert report.sectors_erased == 1
    assert report.bytes_programmed == len(data)
    assert report.commands == 1 + 4 + 1  # erase, four buffers, STOP
    assert report.virtual_seconds is not None and report.virtual_seconds > 0.25  # one 16 KB erase, typical


def test_crc_command_matches_the_host_crc(sim_session):
    data = _random(20 * KB, seed=3)
    report = run_stream(sim_session.target, STUB, [
        EraseSector(0), EraseSector(1), Program(FLASH_START, data),
        Crc(FLASH_START, len(data)), Crc(FLASH_START + 4, 1000), Crc(SECTORS[1].start + 8 * KB, 8 * KB)])
    assert [(c.address, c.size) for c in report.crcs] == [
        (FLASH_START, len(data)), (FLASH_START + 4, 1000), (SECTORS[1].start + 8 * KB, 8 * KB)]
    assert report.crcs[0].value == stm32_crc32(data)
    assert report.crcs[1].value == stm32_crc32(data[4:1004])
    assert report.crcs[2].value == stm32_crc32(b"\xff" * 8 * KB)  # erased, never programmed


def test_x16_parallelism_programs_the_same_bytes(sim_session):
    data = _random(5000, seed=4)
    run_stream(sim_session.target, STUB, [EraseSector(2), Program(SECTORS[2].start + 2, data)],
               psize=protocol.PSIZE_X16)
    assert _read_flash(sim_session, SECTORS[2].start + 2, len(data)) == data


def test_flash_is_locked_and_core_halted_after_the_stream(sim_session):
    run_stream(sim_session.target, STUB, [EraseSector(3)])
    target = sim_session.target
    assert target.is_halted()
    assert target.read32(registers.FLASH_CR) & registers.FLASH_CR_LOCK


def test_write_protected_sector_stops_the_stream_with_its_code_and_sector(open_session, sim_state_dir):
    session = _open_with_faults(open_session, sim_state_dir, "wrp=1")
    data = _random(4 * KB, seed=5)
    with pytest.raises(StreamCommandError) as caught:
        run_stream(session.target, STUB, [EraseSector(0), EraseSector(1), EraseSector(2),
                                          Program(SECTORS[2].start, data)])
    error = caught.value
    assert error.kind == "FLASH_ERROR"
    assert error.operation == "EraseSector"
    assert (error.sector, error.sr_names, error.address) == (1, ["WRPERR"], SECTORS[1].start)
    assert error.request == EraseSector(1)
    assert error.record is not None and error.record.sr & registers.FLASH_SR_WRPERR
    assert "sector 1" in str(error) and "WRPERR" in str(error)
    # Nothing after the failed command ran, and FLASH_CR was locked again.
    assert _read_flash(session, SECTORS[2].start, len(data)) == b"\xff" * len(data)
    assert session.target.read32(registers.FLASH_CR) & registers.FLASH_CR_LOCK


def test_program_over_unerased_flash_is_reported_with_the_address(sim_session):
    run_stream(sim_session.target, STUB, [EraseSector(0), Program(FLASH_START, b"\x00" * 64)])
    with pytest.raises(StreamCommandError) as caught:
        run_stream(sim_session.target, STUB, [Program(FLASH_START + 32, b"\x5a" * 32)])
    error = caught.value
    assert (error.kind, error.operation, error.sector) == ("VERIFY_MISMATCH", "ProgramPage", 0)
    assert error.address == FLASH_START + 32
    assert error.request == Program(FLASH_START + 32, b"\x5a" * 32)


def test_reset_during_an_erase_is_reported_as_a_reset(open_session, sim_state_dir):
    session = _open_with_faults(open_session, sim_state_dir, "reset=erase:1:middle:brownout")
    with pytest.raises(TargetResetError) as caught:
        run_stream(session.target, STUB, [EraseSector(0), EraseSector(1), Program(FLASH_START, b"\x11" * 64)])
    error = caught.value
    assert error.request == EraseSector(0)
    assert error.reset_flags & registers.RCC_CSR_BORRSTF
    assert "reset" in str(error)


def test_watchdog_reset_during_programming_is_reported_as_a_reset(open_session, sim_state_dir):
    session = _open_with_faults(open_session, sim_state_dir, "reset=program:300:middle:iwdg")
    with pytest.raises(TargetResetError) as caught:
        run_stream(session.target, STUB, [EraseSector(0), Program(FLASH_START, _random(4 * KB, seed=6))])
    assert isinstance(caught.value.request, Program)
    assert caught.value.reset_flags & registers.RCC_CSR_IWDGRSTF


def test_probe_disconnect_mid_stream_is_reported_as_such(open_session, sim_state_dir):
    session = _open_with_faults(open_session, sim_state_dir, "disconnect=400")
    with pytest.raises(LinkLostError) as caught:
        run_stream(session.target, STUB, [EraseSector(0), EraseSector(1), Program(FLASH_START, b"\x22" * 64)])
    assert caught.value.request is not None  # it happened during the stream, not while loading


def test_application_watchdog_is_kept_quiet_during_a_long_erase(open_session, sim_state_dir):
    session = _open_with_faults(open_session, sim_state_dir, "iwdg=5ms")
    data = _random(2 * KB, seed=7)
    report = run_stream(session.target, STUB, [EraseSector(4), Program(SECTORS[4].start, data)])
    assert report.sectors_erased == 1  # a 64 KB erase takes 550 ms, the application's IWDG 5 ms
    assert _read_flash(session, SECTORS[4].start, len(data)) == data


def test_512k_erase_program_verify_over_stlink_v2(open_session, capsys):
    session = open_session("stlink-v2")
    data = _random(512 * KB, seed=8)
    operations = [EraseSector(s.index) for s in SECTORS] + [Program(FLASH_START, data), Crc(FLASH_START, len(data))]
    report = run_stream(session.target, STUB, operations)
    assert report.crcs[0].value == stm32_crc32(data)
    assert report.virtual_seconds is not None
    ratio = report.virtual_seconds / FLOOR_512K_S
    with capsys.disabled():
        print(f"\nf4load stream, 512 KB erase+program+CRC verify over stlink-v2: {report.virtual_seconds:.3f} s "
              f"virtual, {ratio:.3f} x the {FLOOR_512K_S} s floor ({report})")
    assert ratio > 1.0  # sanity: nothing beats the flash's own erase and program times
