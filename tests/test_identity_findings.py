"""`f4load diagnose` is the command meant to look at doubtful silicon: an identity f4load would refuse to program
(here F_SIZE reading 0 KB, `fsize=0`) is a finding, the most likely cause, and every other check still runs."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from f4load import exit_status
from f4load.cli import EXIT_PROBE, cli
from f4load.sim import faults


def f4load(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_diagnose_reports_a_wrong_f_size_and_runs_every_other_check(chip: Path) -> None:
    faults.inject(str(chip), "fsize=0")
    result = f4load("diagnose", "--json", "--trial-erase", 1, "--yes")
    assert result.exit_code == exit_status.DIAGNOSE["problem"], result.output
    diagnosis = json.loads(result.stdout)["details"]["diagnosis"]
    names = [c["name"] for c in diagnosis["checks"]]
    assert names[:2] == ["identity", "supply"] and "trial erase" in names and "CRC unit" in names
    identity = diagnosis["checks"][0]
    assert identity["verdict"] == "problem" and identity["summary"].startswith("F_SIZE (0x1FFF7A22) reads 0 KB")
    assert diagnosis["causes"][0] == "identity"
    trial = next(c for c in diagnosis["checks"] if c["name"] == "trial erase")
    assert "did not run: Init failed: F_SIZE" in trial["summary"]  # the stub refuses the part too


def test_programming_such_a_part_is_still_refused(chip: Path, tmp_path: Path) -> None:
    faults.inject(str(chip), "fsize=0")
    (tmp_path / "app.bin").write_bytes(b"\x00" * 1024)
    refused = f4load(tmp_path / "app.bin")
    assert refused.exit_code == EXIT_PROBE and "F_SIZE (0x1FFF7A22) reads 0 KB" in refused.stderr
