"""A board whose supply cannot deliver the x32 program/erase current (`weak-supply=OHMS`: VDD sags by R x the
DS8626 current of the parallelism in use), diagnosed and worked around with a lower parallelism.

With 150 ohm an x32 erase (about 12 mA) pulls 3.3 V down to 1.5 V, below the power-down threshold: the chip resets
(PORRSTF); an x8 erase (about 5 mA) leaves 2.55 V, enough for x8. With 60 ohm an x32 erase leaves 2.58 V: no
reset with BOR off, but below x32's 2.7 V: OPERR; with BOR level 3 (2.70 V) the same sag is a BOR reset.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from click.testing import CliRunner, Result

from f4load import exit_status
from f4load.cli import EXIT_FLASH, EXIT_LINK, EXIT_USAGE, cli
from f4load.part import KB
from f4load.sim import faults
from f4load.sim.state import load_state


def f4load(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def app(tmp_path: Path) -> bytes:
    data = random.Random(41).randbytes(40 * KB)
    (tmp_path / "app.bin").write_bytes(data)
    return data


def holds(chip: Path, data: bytes) -> bool:
    return bytes(load_state(chip, use_environment=False).flash[:len(data)]) == data


def test_diagnose_trial_erase_finds_the_supply_cannot_deliver_the_x32_current(chip: Path) -> None:
    faults.inject(str(chip), "weak-supply=150")
    result = f4load("diagnose", "--trial-erase", 1, "--yes")
    assert result.exit_code == exit_status.DIAGNOSE_PROBLEM, result.output
    assert "[ problem ] trial erase: the supply cannot deliver the x32 erase current: the erase of sector 1 reset " \
           "the chip (brown-out) at x32 and passed at x8" in result.stdout
    verdict = result.stdout.splitlines()[-2:]
    assert verdict[0].startswith("verdict: problem - most likely cause: trial erase: the supply cannot deliver")
    assert "VCAP1/VCAP2" in verdict[1] and "--psize x8" in verdict[1]


def test_diagnose_json_has_both_attempts(chip: Path) -> None:
    faults.inject(str(chip), "weak-supply=150")
    result = f4load("diagnose", "--json", "--trial-erase", 1, "--yes")
    trial = json.loads(result.stdout)["details"]["diagnosis"]["trial_erase"]
    assert (trial["psize"], trial["ok"], trial["reset"]) == ("x32", False, True)
    assert (trial["retry"]["psize"], trial["retry"]["ok"]) == ("x8", True)
    assert 0.35 <= trial["retry"]["seconds"] <= 0.45  # 16 KB at x8: 0.4 s typical (DS8626 Table 40)


def test_programming_at_x32_resets_and_says_to_try_x8_which_programs_the_board(chip: Path, tmp_path: Path) -> None:
    data = app(tmp_path)
    faults.inject(str(chip), "weak-supply=150")
    cut = f4load(tmp_path / "app.bin")
    assert cut.exit_code == EXIT_LINK
    assert "the supply cannot deliver the erase/program current" in cut.stderr
    assert "run the same command with --psize x8" in cut.stderr
    done = f4load(tmp_path / "app.bin", "--psize", "x8")
    assert done.exit_code == 0, done.stderr
    assert holds(chip, data)


def test_a_sag_below_the_x32_minimum_without_a_reset_is_operr_with_the_same_advice(chip: Path, tmp_path: Path) -> None:
    app(tmp_path)
    faults.inject(str(chip), "weak-supply=60")
    failed = f4load(tmp_path / "app.bin")
    assert failed.exit_code == EXIT_FLASH
    assert "OPERR" in failed.stderr and "hint: OPERR at x32" in failed.stderr and "add --psize x8" in failed.stderr


def test_with_bor_on_the_same_sag_is_a_brown_out_without_a_power_down(chip: Path, tmp_path: Path) -> None:
    app(tmp_path)
    assert f4load("option-bytes", "--bor", "3").exit_code == 0  # BOR level 3: 2.70 V
    faults.inject(str(chip), "weak-supply=60")
    cut = f4load(tmp_path / "app.bin")
    assert cut.exit_code == EXIT_LINK
    assert "RCC_CSR reset flags BORRSTF, PINRSTF: brown-out: VDD fell below the BOR threshold" in cut.stderr


def test_a_parallelism_the_supply_does_not_allow_is_refused_before_anything_is_erased(chip: Path,
                                                                                      tmp_path: Path) -> None:
    app(tmp_path)
    faults.inject(str(chip), "vdd=2.0")
    before = bytes(load_state(chip, use_environment=False).flash)
    refused = f4load(tmp_path / "app.bin", "--psize", "x16")
    assert refused.exit_code == EXIT_USAGE
    assert refused.stderr.strip().splitlines()[-1] == (
        "f4load: error: --psize x16 needs VDD of 2.1 V or more (RM0090 Table 13); VDD is 2.00 V (measured by the "
        "probe): the widest it allows is x8; nothing was erased")
    assert bytes(load_state(chip, use_environment=False).flash) == before


def test_the_fault_reads_and_prints_its_resistance() -> None:
    import pytest

    from f4load.sim.faults import FaultSpecError, parse_fault_spec

    spec = parse_fault_spec("weak-supply=150ohm")
    assert spec.supply_resistance_ohm == 150.0 and spec.to_text() == "weak-supply=150"
    assert parse_fault_spec(spec.to_text()) == spec
    for bad in ("weak-supply=0", "weak-supply=-5", "weak-supply=strong", "weak-supply=5000"):
        with pytest.raises(FaultSpecError):
            parse_fault_spec(bad)
