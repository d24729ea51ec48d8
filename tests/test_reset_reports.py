"""A reset or a lost link in the middle of the work is reported with the operation and sector really in progress
(by the stub's own record in RAM, not by the host's last poll), RCC_CSR's flags once and in RM0090's terms, what
the flash may hold now, and the next step.

The 48 KB image spans sectors 0-2 (16 KB each); the chip holds other bytes there first, so the stream is: erase
sector 0, program it (two 8 KB buffers), erase sector 1, program it, erase sector 2, program it, verify.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import List

from click.testing import CliRunner, Result

from f4load.cli import EXIT_LINK, cli
from f4load.registers import RCC_CSR_BORRSTF, RCC_CSR_IWDGRSTF, RCC_CSR_PINRSTF, RCC_CSR_PORRSTF
from f4load.reset_causes import classify
from f4load.sim import faults

KB = 1024


def f4load(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def report_lines(result: Result) -> List[str]:
    """The error report: from the `f4load: error:` line on (pyocd may warn before it)."""
    lines = result.stderr.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("f4load: error:")):]


def cut_job(chip: Path, tmp_path: Path, fault: str) -> Result:
    rng = random.Random(7)
    (tmp_path / "old.bin").write_bytes(rng.randbytes(48 * KB))
    (tmp_path / "app.bin").write_bytes(rng.randbytes(48 * KB))
    assert f4load(tmp_path / "old.bin", "-q").exit_code == 0
    faults.inject(str(chip), fault)
    result = f4load(tmp_path / "app.bin")
    assert result.exit_code == EXIT_LINK, result.stderr
    return result


def test_a_pin_reset_at_the_start_of_the_second_erase_names_the_erase_of_sector_1(chip: Path, tmp_path: Path):
    lines = report_lines(cut_job(chip, tmp_path, "reset=erase:2:start:pin"))
    assert lines[0] == "f4load: error: the chip reset during erase sector 1 (by the stub's own record): NRST pin"
    assert "RCC_CSR reset flags PINRSTF: NRST pin" in lines[1]
    assert lines[2] == ("  the flash now: sector 0 rewritten, sector 1 possibly half-erased (erase it again), "
                        "sector 2 untouched")
    assert lines[3].startswith("  next: check the reset circuit")
    assert sum("RCC_CSR" in line for line in lines) == 1


def test_a_watchdog_reset_in_the_100th_program_write_names_the_program_of_sector_0(chip: Path, tmp_path: Path):
    lines = report_lines(cut_job(chip, tmp_path, "reset=program:100:middle:iwdg"))
    assert lines[0] == ("f4load: error: the chip reset during program 8192 bytes at 0x08000000 (sector 0) (by the "
                        "stub's own record): independent watchdog")
    assert "RCC_CSR reset flags IWDGRSTF, PINRSTF: independent watchdog" in lines[1]
    assert "sector 0 partly programmed (the last write possibly half done), sectors 1-2 untouched" in lines[2]
    assert "f4load diagnose" in lines[3]


def test_a_brown_out_mid_erase_says_supply_vcap_and_a_lower_parallelism(chip: Path, tmp_path: Path):
    lines = report_lines(cut_job(chip, tmp_path, "reset=erase:3:middle:brownout"))
    assert lines[0] == "f4load: error: the chip reset during erase sector 2 (by the stub's own record): brown-out"
    assert "sectors 0-1 rewritten, sector 2 possibly half-erased" in lines[2]
    assert "VCAP1/VCAP2" in lines[3] and "run the same command with --psize x8" in lines[3]


def test_a_lost_link_says_what_the_stub_still_does_on_a_powered_board(chip: Path, tmp_path: Path):
    lines = report_lines(cut_job(chip, tmp_path, "disconnect=300"))
    assert lines[0].startswith("f4load: error: lost the target during") and "(by the host's last poll)" in lines[0]
    assert "if the board kept power, the stub goes on up to" in lines[1]
    assert "waits with FLASH_CR unlocked until a reset" in lines[1]
    assert "power-cycle" in lines[2]


def test_rcc_csr_flags_in_rm0090_terms():
    assert classify(RCC_CSR_BORRSTF | RCC_CSR_PINRSTF).key == "brown-out"          # BOR without POR
    assert classify(RCC_CSR_IWDGRSTF | RCC_CSR_PINRSTF).key == "iwdg"              # the pin comes with it
    assert classify(RCC_CSR_PINRSTF).key == "pin"                                 # the pin alone
    power_up = classify(RCC_CSR_PORRSTF | RCC_CSR_BORRSTF | RCC_CSR_PINRSTF, during_work=False)
    assert power_up.name == "power-on" and not power_up.next_step                 # an ordinary power-up
    assert classify(RCC_CSR_PORRSTF | RCC_CSR_BORRSTF | RCC_CSR_PINRSTF).supply   # ... but not mid-erase


def test_when_an_application_overwrote_the_stubs_record_the_host_says_it_only_knows_its_last_poll(sim_session):
    import pytest

    from f4load.stream import EraseSector, Program, StubRunner, TargetResetError
    from f4load.stub_image import StubImage

    stub = StubImage.shipped()
    chip = sim_session.probe.chip

    def reset_with_ram_overwritten(operation: object, nbytes: int) -> None:
        if isinstance(operation, EraseSector):  # as an application's startup code zeroing its .bss would
            chip.bus_write_block(stub.layout().queue_address, b"\x00" * 16)
            chip.reset("pin")

    with pytest.raises(TargetResetError) as caught:
        with StubRunner(sim_session.target, stub) as runner:
            runner.run([EraseSector(0), Program(0x0800_0000, b"\x00" * 16 * KB), EraseSector(1)],
                       progress=reset_with_ram_overwritten)
    assert caught.value.located_by == "the host's last poll"
    assert caught.value.flash_after.startswith("sector 0 partly programmed (the last write possibly half done), "
                                               "sector 1 untouched (or later: the stub may have got as far as ")
