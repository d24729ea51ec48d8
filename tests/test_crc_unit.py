"""The CRC unit is checked with a known answer before f4load relies on it (skip-unchanged, verify). When it fails
(`crc-broken`: a clone without ST's unit, or damage) f4load says so once and compares read-back data instead:
slower, still correct; `f4load diagnose` reports it as a finding."""
from __future__ import annotations

import json
import random
from pathlib import Path

from click.testing import CliRunner, Result

from f4load import exit_status
from f4load.cli import cli
from f4load.part import KB
from f4load.sim import faults
from f4load.sim.state import load_state


def f4load(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def app(tmp_path: Path, seed: int = 51) -> bytes:
    data = random.Random(seed).randbytes(40 * KB)
    (tmp_path / "app.bin").write_bytes(data)
    return data


def test_a_broken_crc_unit_is_said_once_and_programming_is_still_verified(chip: Path, tmp_path: Path) -> None:
    data = app(tmp_path)
    faults.inject(str(chip), "crc-broken")
    result = f4load(tmp_path / "app.bin")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("known words") == 1 and "reading it back" in result.stderr
    assert "verified" in result.stdout
    assert bytes(load_state(chip, use_environment=False).flash[:len(data)]) == data


def test_a_broken_crc_unit_still_skips_unchanged_sectors_and_verify_still_finds_the_truth(chip: Path,
                                                                                         tmp_path: Path) -> None:
    app(tmp_path)
    faults.inject(str(chip), "crc-broken")
    assert f4load(tmp_path / "app.bin", "-q").exit_code == 0
    again = f4load(tmp_path / "app.bin", "--json")
    assert json.loads(again.stdout)["bytes_erased"] == 0  # compared by reading back: all unchanged
    assert f4load("verify", tmp_path / "app.bin").exit_code == 0
    app(tmp_path, seed=52)  # other bytes
    differs = f4load("verify", tmp_path / "app.bin")
    assert differs.exit_code == 5 and "first differing byte at 0x08000000" in differs.stderr


def test_diagnose_reports_the_crc_unit_as_a_finding(chip: Path) -> None:
    assert check_named(diagnosis(), "CRC unit")["verdict"] == "ok"
    faults.inject(str(chip), "crc-broken")
    crc = check_named(diagnosis(), "CRC unit")
    assert crc["verdict"] == "warning" and "clone" in crc["summary"]
    assert "gives 0xffffffff for 4 known words, expected" in crc["details"][0]


def diagnosis() -> dict:
    result = f4load("diagnose", "--json")
    out: dict = json.loads(result.stdout)["details"]["diagnosis"]
    assert result.exit_code == exit_status.DIAGNOSE[out["verdict"]], result.output
    return out


def check_named(result: dict, name: str) -> dict:
    return next(c for c in result["checks"] if c["name"] == name)
