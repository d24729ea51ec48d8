"""Option-byte commands on the virtual STM32F407 (RM0090 3.6.5, 3.7): protect, unprotect, rdp, option-bytes.

What the option bytes hold afterwards is read from the chip's saved state, not through f4load.
"""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from f4load.cli import EXIT_FLASH, EXIT_USAGE, cli, main
from f4load.option_bytes import OptionBytes, sector_ranges
from f4load.registers import FLASH_OPTCR_RESET
from f4load.sim.state import load_state


def f4load(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def options(state_dir: Path) -> OptionBytes:
    return OptionBytes(load_state(state_dir, use_environment=False).options.optcr)


def test_decoding_the_factory_value() -> None:
    factory = OptionBytes(FLASH_OPTCR_RESET)
    assert factory.rdp_level == 0 and factory.nwrp == 0xFFF and factory.software_watchdog
    assert factory.bor_name.startswith("BOR off") and not factory.reset_on_stop and not factory.reset_on_standby


def test_sector_ranges_are_written_the_way_the_commands_take_them() -> None:
    assert sector_ranges([3, 0, 1, 2, 5, 7, 8]) == "0-3,5,7-8"


def test_protect_then_unprotect_round_trips_nwrp(chip: Path) -> None:
    result = f4load("protect", "0-3,5")
    assert result.exit_code == 0, result.output
    assert "nWRP 0xfff -> 0xfd0" in result.stdout
    assert options(chip).nwrp == 0xFD0
    assert f4load("unprotect", "5").exit_code == 0
    assert options(chip).nwrp == 0xFF0
    assert f4load("unprotect", "--all").exit_code == 0
    assert options(chip).nwrp == 0xFFF


def test_protect_refuses_a_sector_the_part_does_not_have(chip: Path) -> None:
    result = f4load("protect", "9")
    assert result.exit_code == EXIT_USAGE and "no sector 9" in result.stderr
    assert options(chip).nwrp == 0xFFF


def test_option_bytes_sets_bor_watchdog_and_reset_bits(chip: Path) -> None:
    result = f4load("option-bytes", "--bor", "3", "--wdg", "hw", "--nrst-stop", "0", "--json")
    assert result.exit_code == 0, result.output
    after = json.loads(result.stdout)["details"]["after"]
    assert after["bor_level"] == 0 and not after["wdg_sw"] and not after["nrst_stop"] and after["nrst_stdby"]
    saved = options(chip)
    assert saved.bor_level == 0 and not saved.software_watchdog and saved.reset_on_stop


def test_option_bytes_without_options_shows_them_decoded(chip: Path) -> None:
    result = f4load("option-bytes")
    assert result.exit_code == 0
    assert "FLASH_OPTCR 0x0fffaaed" in result.stdout and "RDP        level 0 (0xaa)" in result.stdout


def test_rdp_2_is_refused_without_the_named_flag_and_says_why(chip: Path) -> None:
    status = main(["rdp", "2", "--yes"])
    assert status == EXIT_USAGE
    assert options(chip).rdp_level == 0


def test_rdp_2_with_the_flag_freezes_the_option_bytes_for_good(chip: Path) -> None:
    assert f4load("rdp", "2", "--i-understand-rdp2-is-permanent").exit_code == 0
    assert options(chip).rdp_level == 2
    result = f4load("protect", "0")
    assert result.exit_code == EXIT_FLASH and "permanent" in result.stderr
    assert options(chip).nwrp == 0xFFF


def test_rdp_1_then_0_with_yes_needs_no_question(chip: Path) -> None:
    assert f4load("rdp", "1").exit_code == 0
    assert options(chip).rdp_level == 1
    result = f4load("rdp", "0", "--yes")
    assert result.exit_code == 0, result.output
    assert options(chip).rdp_level == 0
