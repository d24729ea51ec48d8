"""`f4load diagnose` on the virtual STM32F407: one scenario per test, each a way a board "fails to erase".

Every test breaks a factory-new virtual chip in one way (docs/faults.md), runs `f4load diagnose --json` as a
user would, and checks the verdict, the most likely cause and the command offered as the fix; the fix tests
then run that command and program the chip. The chip's saved state is read directly, never through f4load.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict

from click.testing import CliRunner, Result

from f4load import exit_status
from f4load.cli import EXIT_DIAGNOSE_PROBLEM, EXIT_FLASH, EXIT_OK, cli
from f4load.part import KB
from f4load.sim import faults
from f4load.sim.state import load_state


def f4load(*args: object, input: str = "") -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)




def diagnosis(*args: object) -> Dict[str, Any]:
    result = f4load("diagnose", "--json", *args)
    out: Dict[str, Any] = json.loads(result.stdout)["details"]["diagnosis"]
    assert result.exit_code == exit_status.DIAGNOSE[out["verdict"]], result.output
    return out


def check(result: Dict[str, Any], name: str) -> Dict[str, Any]:
    return next(c for c in result["checks"] if c["name"] == name)


def flash(state_dir: Path, size: int = 512 * KB) -> bytes:
    return bytes(load_state(state_dir, use_environment=False).flash[:size])


def app(tmp_path: Path, size: int = 40 * KB) -> Path:
    path = tmp_path / "app.bin"
    path.write_bytes(random.Random(size).randbytes(size))
    return path


def test_healthy_chip_gets_a_clean_bill(chip: Path) -> None:
    result = diagnosis()
    assert result["verdict"] == "ok" and result["causes"] == [] and result["fix"] is None
    assert all(c["verdict"] == "ok" for c in result["checks"])
    assert f4load("diagnose").exit_code == EXIT_OK


def test_a_write_protected_chip_fails_the_production_gate(chip: Path) -> None:
    faults.inject(chip, "wrp=0-3")
    result = f4load("diagnose")
    assert result.exit_code == EXIT_DIAGNOSE_PROBLEM, result.output
    assert "verdict: problem - most likely cause: write protection" in result.stdout


def test_healthy_chip_trial_erase_takes_the_datasheet_time(chip: Path) -> None:
    result = diagnosis("--trial-erase", 5, "--yes")
    trial = result["trial_erase"]
    assert result["verdict"] == "ok"
    assert trial["ok"] and not trial["reset"] and trial["flash_sr_bits"] == []
    assert trial["typical_s"] == 1.0 and trial["max_s"] == 2.0
    assert 0.9 <= trial["seconds"] <= 1.2  # 128 KB at x32: 1 s typical (DS8626 Table 40)


def test_write_protected_sectors_0_to_3(chip: Path) -> None:
    faults.inject(str(chip), "wrp=0-3")
    result = diagnosis("--trial-erase", 0, "--yes")
    assert result["verdict"] == "problem" and result["causes"][0] == "write protection"
    assert result["fix"].startswith("f4load unprotect 0-3")
    assert check(result, "trial erase")["verdict"] == "problem"
    assert result["trial_erase"]["flash_sr_bits"] == ["WRPERR"]
    # otherwise healthy: nothing else is blamed
    assert set(result["causes"]) == {"write protection", "trial erase"}


def test_write_protected_program_names_the_fix_then_unprotect_lets_it_program(chip: Path, tmp_path: Path) -> None:
    faults.inject(str(chip), "wrp=0-3")
    image = app(tmp_path)
    refused = f4load(image)
    assert refused.exit_code == EXIT_FLASH
    assert "sectors 0-2 are write-protected" in refused.stderr and "f4load unprotect 0-2" in refused.stderr
    assert flash(chip, 64 * KB) == b"\xff" * 64 * KB
    assert f4load("unprotect", "0-3").exit_code == 0
    assert load_state(chip, use_environment=False).options.optcr >> 16 & 0xFFF == 0xFFF
    programmed = f4load(image)
    assert programmed.exit_code == 0, programmed.output
    assert flash(chip, image.stat().st_size) == image.read_bytes()


def test_rdp_level_1(chip: Path) -> None:
    faults.inject(str(chip), "rdp1")
    result = diagnosis()
    assert result["verdict"] == "problem" and result["causes"][0] == "read protection"
    assert result["fix"].startswith("f4load rdp 0")
    assert "mass-erases" in result["fix"]


def test_rdp_0_mass_erases_after_confirmation_then_programming_works(chip: Path, tmp_path: Path) -> None:
    image = app(tmp_path)
    assert f4load(image).exit_code == 0
    faults.inject(str(chip), "rdp1")
    declined = f4load("rdp", "0", input="n\n")
    assert declined.exit_code != 0 and "MASS-ERASES" in declined.output
    assert load_state(chip, use_environment=False).options.rdp_level == 1
    accepted = f4load("rdp", "0", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert load_state(chip, use_environment=False).options.rdp_level == 0
    assert flash(chip) == b"\xff" * 512 * KB  # the regression erased everything
    programmed = f4load(image)
    assert programmed.exit_code == 0, programmed.output
    assert flash(chip, image.stat().st_size) == image.read_bytes()


def test_hardware_watchdog_with_a_short_timeout(chip: Path) -> None:
    faults.inject(str(chip), "hw-watchdog")
    result = diagnosis()
    watchdog = check(result, "watchdog")
    assert result["verdict"] == "problem" and result["causes"][0] == "watchdog"
    assert "512 ms" in watchdog["summary"]  # reset values: /4, reload 0xFFF at 32 kHz
    assert result["fix"].startswith("f4load option-bytes --wdg sw")
    assert f4load("option-bytes", "--wdg", "sw").exit_code == 0
    assert diagnosis()["verdict"] == "ok"


def test_brownout_reset_during_a_128k_trial_erase(chip: Path) -> None:
    faults.inject(str(chip), "reset=erase:1:middle:brownout")
    result = diagnosis("--trial-erase", 5, "--yes")
    trial = result["trial_erase"]
    assert result["verdict"] == "problem" and result["causes"][0] == "trial erase"
    assert trial["reset"] and not trial["ok"] and "brown-out" in trial["reset_causes"]
    assert "brown-out" in check(result, "trial erase")["summary"]
    assert "intermittent supply dip" in check(result, "trial erase")["summary"]  # x8, then x32 again, both erased
    assert trial["retry"]["ok"] and trial["confirm"]["ok"]
    assert result["fix"].startswith("fix the supply, then f4load diagnose --trial-erase 5")
    assert trial["seconds"] < trial["typical_s"]  # cut off in the middle


def test_sticky_pgserr_left_by_the_application_seen_with_attach(chip: Path) -> None:
    faults.inject(str(chip), "sticky=PGSERR")
    assert diagnosis()["verdict"] == "ok"  # under reset the application never ran
    result = diagnosis("--attach")
    assert result["verdict"] == "problem" and result["causes"][0] == "flash interface"
    assert "PGSERR" in check(result, "flash interface")["summary"]
    assert result["fix"].startswith("f4load app.bin")


def test_cr_locked_by_a_wrong_key_seen_with_attach(chip: Path) -> None:
    faults.inject(str(chip), "bad-key")
    result = diagnosis("--attach")
    assert result["verdict"] == "problem" and result["causes"][0] == "flash interface"
    assert "wrong key" in check(result, "flash interface")["summary"]
    assert result["fix"].startswith("f4load app.bin")


def test_low_supply_with_x32_requested(chip: Path) -> None:
    faults.inject(str(chip), "vdd=2.0")
    result = diagnosis("--psize", "x32")
    assert result["verdict"] == "problem" and result["causes"][0] == "supply"
    assert "x32 needs 2.7 V" in check(result, "supply")["summary"]
    assert result["fix"].startswith("f4load app.bin --vdd 2.0")


def test_clone_identity(chip: Path) -> None:
    faults.inject(str(chip), "clone")
    result = diagnosis()
    identity = check(result, "identity")
    assert result["verdict"] == "warning" and result["causes"] == ["identity"]
    assert "clone" in identity["summary"] and "REV_ID 0x2001" in identity["summary"]
    assert result["fix"].startswith("f4load diagnose --trial-erase 1 --yes")


def test_text_output_lists_the_checklist_and_the_fix(chip: Path) -> None:
    faults.inject(str(chip), "wrp=0-3")
    result = f4load("diagnose")
    assert result.exit_code == EXIT_DIAGNOSE_PROBLEM
    assert "[ problem ] write protection: sectors 0-3 write-protected" in result.stdout
    assert "fix: f4load unprotect 0-3" in result.stdout
