"""What pyocd reports, with f4load's algorithm, for every fault the virtual chip can inject (docs/faults.md).

Each scenario breaks the virtual STM32F407 one way, programs through pyocd's FileProgrammer (the code path
of `pyocd flash`), and checks that pyocd raised its own exception type whose cause is f4load's StubError
naming the right FLASH_SR bits, sector and address - and that the text says so too.
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest
from pyocd.core.exceptions import FlashEraseFailure, FlashFailure, FlashProgramFailure
from pyocd.flash.file_programmer import FileProgrammer

from f4load import protocol
from f4load import registers as reg
from f4load.errors import StubError, describe
from f4load.part import FLASH_START, KB
from f4load.pyocd_targets import F4LoadFlash, register_targets

# No link cost: these tests are about what is reported, not how long it takes.
LINK = "ideal"
TARGET_TYPE = "f4load_stm32f407xe"
REPO = Path(__file__).resolve().parent.parent
SECTOR5 = FLASH_START + 0x2_0000  # 128 KB, RM0090 Table 5


@pytest.fixture(autouse=True)
def f4load_targets() -> None:
    register_targets()


def image(size: int, seed: int = 5) -> bytes:
    return random.Random(seed).randbytes(size)


def quiet(progress: float) -> None:
    """A FileProgrammer progress callback that prints nothing."""


def broken_chip(open_session: Any, monkeypatch: pytest.MonkeyPatch, faults: str, **options: Any) -> Any:
    """A pyocd session on a virtual chip with `faults` (text form), using f4load's algorithm."""
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", faults)
    return open_session(LINK, target_override=TARGET_TYPE, **options)


def program(session: Any, data: bytes, address: int = FLASH_START, **options: Any) -> None:
    FileProgrammer(session, progress=quiet, **options).program(io.BytesIO(data), base_address=address,
                                                               file_format="bin")


def main_flash(session: Any) -> F4LoadFlash:
    flash = session.target.memory_map.get_boot_memory().flash
    assert isinstance(flash, F4LoadFlash)
    return flash


def stub_error_of(failure: pytest.ExceptionInfo) -> StubError:
    cause = failure.value.__cause__
    assert isinstance(cause, StubError), f"no StubError behind {failure.value!r}"
    assert failure.value.result_code == cause.code
    assert str(cause) in str(failure.value)  # pyocd's message is ours (plus its own address/code suffix)
    return cause


def reset_flags(session: Any) -> int:
    return session.target.read32(reg.RCC_CSR)


# --- the error type on its own -----------------------------------------------------------------------------
def test_a_stub_error_takes_its_facts_from_the_code_alone():
    error = StubError(0x0135_0010, address=SECTOR5)  # docs/stub.md's example: WRPERR erasing sector 5
    assert (error.operation, error.kind, error.sector, error.sector_address) == ("EraseSector", "FLASH_ERROR",
                                                                                 5, SECTOR5)
    assert (error.sr_names, error.stale, error.is_erase, error.is_program) == (["WRPERR"], False, True, False)
    assert str(error) == describe(0x0135_0010, address=SECTOR5)
    assert str(error).startswith("EraseSector failed on sector 5 (0x08020000, 128 KB)")
    assert "requested address 0x08020000" in str(error)


# --- write protection and read-out protection ---------------------------------------------------------------
def test_a_write_protected_sector_is_named_with_wrperr(open_session, monkeypatch):
    session = broken_chip(open_session, monkeypatch, "wrp=5")
    with pytest.raises(FlashEraseFailure) as failure:
        program(session, image(512 * KB))
    error = stub_error_of(failure)
    assert (error.operation, error.kind, error.sector, error.sr_names) == ("EraseSector", "FLASH_ERROR", 5,
                                                                           ["WRPERR"])
    assert error.address == failure.value.address == SECTOR5
    text = str(failure.value)
    assert "EraseSector failed on sector 5 (0x08020000, 128 KB)" in text
    assert "FLASH_SR.WRPERR" in text and "nWRP" in text


def test_rdp_level1_refuses_the_first_erase_with_wrperr(open_session, monkeypatch):
    session = broken_chip(open_session, monkeypatch, "rdp1")
    with pytest.raises(FlashEraseFailure) as failure:
        # RDP level 1 also makes flash reads fault, so pyocd must not read flash first (no smart flash).
        program(session, image(32 * KB), smart_flash=False, keep_unwritten=False)
    error = stub_error_of(failure)
    assert (error.operation, error.sector, error.sr_names, error.address) == ("EraseSector", 0, ["WRPERR"],
                                                                              FLASH_START)
    assert "read-out protection level 1" in str(failure.value)


# --- flags and keys the application left behind -------------------------------------------------------------
def test_sticky_error_flags_left_by_the_application_do_not_fail_programming(open_session, monkeypatch):
    session = broken_chip(open_session, monkeypatch, "sticky=PGSERR,PGPERR")
    data = image(32 * KB)
    program(session, data)
    assert bytes(session.target.read_memory_block8(FLASH_START, len(data))) == data
    assert session.target.read32(reg.FLASH_SR) & reg.FLASH_SR_ERRORS == 0


def test_sticky_flags_are_not_blamed_for_a_later_failure_but_are_reported(open_session, monkeypatch):
    session = broken_chip(open_session, monkeypatch, "sticky=PGSERR wrp=5")
    with pytest.raises(FlashEraseFailure) as failure:
        program(session, image(32 * KB), SECTOR5)
    error = stub_error_of(failure)
    assert (error.sector, error.sr_names) == (5, ["WRPERR"])  # the refusal, not the application's PGSERR
    assert error.record is not None
    assert protocol.sr_bit_names(error.record.stale_sr) == ["PGSERR"]
    assert "PGSERR" in str(failure.value) and "left set by the application" in str(failure.value)


def test_cr_locked_by_a_bad_key_is_reported_as_locked(open_session, monkeypatch):
    session = broken_chip(open_session, monkeypatch, "bad-key", **{"flash.timeout.init": 2.0,
                                                                   "flash.timeout.erase_sector": 2.0})
    with pytest.raises(FlashFailure) as failure:
        program(session, image(16 * KB))
    error = stub_error_of(failure)
    # Init unlocks FLASH_CR (docs/stub.md), so pyocd's Init failure type; no sector, no SR bits involved.
    assert (error.operation, error.kind, error.sector, error.sr_names) == ("Init", "LOCKED", None, [])
    assert error.address == reg.FLASH_KEYR
    assert "FLASH_CR stayed locked" in str(failure.value) and "Reset the chip" in str(failure.value)


# --- supply and flash interface -----------------------------------------------------------------------------
def test_psize_too_wide_for_the_supply_is_operr(open_session, monkeypatch):
    session = broken_chip(open_session, monkeypatch, "vdd=2.0")
    main_flash(session).forced_psize = protocol.PSIZE_X32  # as a host that ignores VDD would
    with pytest.raises(FlashEraseFailure) as failure:
        program(session, image(16 * KB))
    error = stub_error_of(failure)
    assert (error.operation, error.sector, error.sr_names) == ("EraseSector", 0, ["OPERR"])
    assert "parallelism is too wide for the supply" in str(failure.value)


def test_the_same_supply_with_the_parallelism_chosen_from_vdd_programs(open_session, monkeypatch):
    session = broken_chip(open_session, monkeypatch, "vdd=2.0")
    data = image(16 * KB)
    program(session, data)
    assert main_flash(session).config_word == protocol.config_word(protocol.PSIZE_X8)
    assert bytes(session.target.read_memory_block8(FLASH_START, len(data))) == data


def test_bsy_stuck_is_a_bsy_timeout_naming_the_sector(open_session, monkeypatch):
    session = broken_chip(open_session, monkeypatch, "bsy-stuck", **{"flash.timeout.erase_sector": 5.0})
    with pytest.raises(FlashEraseFailure) as failure:
        program(session, image(16 * KB))
    error = stub_error_of(failure)
    assert (error.operation, error.kind, error.sector) == ("EraseSector", "BSY_TIMEOUT", 0)
    assert error.record is not None and error.record.sr & reg.FLASH_SR_BSY
    assert error.record.waited_ms >= 1000  # twice the DS8626 maximum for 16 KB at x32
    assert "waited" in str(failure.value)


def test_programming_over_data_that_was_not_erased_names_the_first_differing_word(open_session):
    """A ProgramPage failure in pyocd's double-buffered path: FlashProgramFailure with the exact address."""
    session = open_session(LINK, target_override=TARGET_TYPE)
    program(session, bytes(4), FLASH_START + 0x104)  # one word of zeros in an otherwise erased sector
    builder = main_flash(session).get_flash_builder()
    builder.add_data(FLASH_START, b"\xa5" * (16 * KB))
    with pytest.raises(FlashProgramFailure) as failure:
        builder.program(smart_flash=False)  # no erase first: what a wrong host sequence would do
    error = stub_error_of(failure)
    assert (error.operation, error.kind, error.sector, error.address) == ("ProgramPage", "VERIFY_MISMATCH", 0,
                                                                          FLASH_START + 0x104)
    assert error.record is not None and (error.record.expected, error.record.actual) == (0xA5A5_A5A5, 0)
    assert "not erased first" in str(failure.value)


# --- the independent watchdog -------------------------------------------------------------------------------
# A hardware watchdog (WDG_SW = 0) the application set to 500 ms; erasing a 128 KB sector takes 1 s at x32.
SHORT_WATCHDOG = "hw-watchdog iwdg=500ms"


def test_a_running_watchdog_shorter_than_a_sector_erase_does_not_reset_the_chip(open_session, monkeypatch):
    session = broken_chip(open_session, monkeypatch, SHORT_WATCHDOG)
    data = image(128 * KB)
    program(session, data, SECTOR5)
    assert reset_flags(session) & reg.RCC_CSR_IWDGRSTF == 0
    assert bytes(session.target.read_memory_block8(SECTOR5, len(data))) == data


def test_without_the_stubs_watchdog_service_the_same_erase_is_cut_off_by_a_reset(open_session, monkeypatch):
    """The control experiment: the scenario above really needs the keep-alive."""
    session = broken_chip(open_session, monkeypatch, SHORT_WATCHDOG, **{"flash.timeout.erase_sector": 1.0})
    main_flash(session).iwdg_keepalive = False
    with pytest.raises(FlashEraseFailure, match="timed out"):
        program(session, image(128 * KB), SECTOR5)
    assert reset_flags(session) & reg.RCC_CSR_IWDGRSTF


# --- the pyocd command line ---------------------------------------------------------------------------------
def test_pyocd_flash_with_the_user_script_prints_what_the_stub_found(run_pyocd, tmp_path):
    app = tmp_path / "app.bin"
    app.write_bytes(image(40 * KB))
    result = run_pyocd("flash", "--script", str(REPO / "examples" / "pyocd_user.py"), "-t", TARGET_TYPE,
                       "-u", "f4sim", str(app), "--base-address", hex(FLASH_START), link=LINK, faults="wrp=1")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "EraseSector failed on sector 1 (0x08004000, 16 KB)" in output
    assert "FLASH_SR.WRPERR" in output


def test_pyocd_flash_with_the_user_script_programs(run_pyocd, tmp_path, sim_state_dir):
    from f4load.sim import state as sim_state

    data = image(40 * KB, seed=9)
    app = tmp_path / "app.bin"
    app.write_bytes(data)
    result = run_pyocd("flash", "--script", str(REPO / "examples" / "pyocd_user.py"), "-t", TARGET_TYPE,
                       "-u", "f4sim", str(app), "--base-address", hex(FLASH_START), link=LINK)
    assert result.returncode == 0, result.stdout + result.stderr
    assert bytes(sim_state.load_state(sim_state_dir).flash)[:len(data)] == data
