"""The per-chip run journal: every run of program/erase/verify (and the diagnose trial erase) is recorded by the
Session with its outcome, operation, sector, FLASH_SR bits and reset causes; `f4load diagnose` reports the recent
failures of this chip and weighs them in its verdict. Also: `diagnose --attach` reads the power-up flags and a
running IWDG right, and a trial erase with BSY stuck says so with the stub's own time."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict

from click.testing import CliRunner, Result

from f4load import exit_status, journal
from f4load.cli import EXIT_LINK, cli
from f4load.image import load_image
from f4load.session import LinkError, Session
from f4load.sim import faults

KB = 1024
UNIQUE_ID = bytes.fromhex("35001f000731304d49533446")  # the virtual chip's


def f4load(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def diagnosis(*args: object) -> Dict[str, Any]:
    result = f4load("diagnose", "--json", *args)
    out: Dict[str, Any] = json.loads(result.stdout)["details"]["diagnosis"]
    assert result.exit_code == exit_status.DIAGNOSE[out["verdict"]], result.output
    return out


def check(result: Dict[str, Any], name: str) -> Dict[str, Any]:
    return next(c for c in result["checks"] if c["name"] == name)


def images(tmp_path: Path) -> tuple:
    rng = random.Random(31)
    (tmp_path / "old.bin").write_bytes(rng.randbytes(48 * KB))
    (tmp_path / "app.bin").write_bytes(rng.randbytes(48 * KB))
    return tmp_path / "old.bin", tmp_path / "app.bin"


def test_the_session_journals_a_brown_out_with_its_operation_sector_and_flags(chip: Path, tmp_path: Path) -> None:
    old, app = images(tmp_path)
    with Session(probe="sim") as session:  # the Python API: no command line involved
        session.program(load_image(str(old)))
    faults.inject(str(chip), "reset=erase:3")
    try:
        with Session(probe="sim") as session:
            session.program(load_image(str(app)))
    except LinkError:
        pass
    entries = journal.Journal(UNIQUE_ID).entries()
    assert [e.outcome for e in entries] == ["ok", "reset"]
    cut = entries[-1]
    assert (cut.command, cut.operation, cut.kind, cut.sector) == ("program", "erase sector 2", "erase", 2)
    assert cut.reset_cause == "power" and cut.reset_flags == 0x0E00_0000  # BORRSTF, PORRSTF, PINRSTF
    assert (cut.psize, cut.vdd) == ("x32", 3.3)


def test_diagnose_names_the_brown_out_during_that_erase_as_the_most_likely_cause(chip: Path, tmp_path: Path) -> None:
    old, app = images(tmp_path)
    assert f4load(old, "-q").exit_code == 0
    faults.inject(str(chip), "reset=erase:3")  # a brown-out during the third erase: sector 2's
    assert f4load(app).exit_code == EXIT_LINK
    result = diagnosis()
    runs = check(result, "recent runs")
    assert result["verdict"] == "problem" and result["causes"][0] == "recent runs"
    assert runs["summary"] == "the last run was cut by a brown-out during the erase of sector 2"
    assert any("RCC_CSR then: BORRSTF, PORRSTF, PINRSTF" in d for d in runs["details"])
    assert "VCAP1/VCAP2" in result["fix"] and "--psize x8" in result["fix"]


def test_three_cut_runs_are_counted_and_a_good_run_clears_the_record(chip: Path, tmp_path: Path) -> None:
    old, app = images(tmp_path)
    assert f4load(old, "-q").exit_code == 0
    faults.inject(str(chip), "reset=erase:1")
    for _ in range(3):
        assert f4load(app).exit_code == EXIT_LINK
    assert check(diagnosis(), "recent runs")["summary"] == \
        "the last 3 runs were cut by a brown-out during the erase of sector 0"
    faults.clear(str(chip))
    assert f4load(app, "-q").exit_code == 0
    assert check(diagnosis(), "recent runs")["verdict"] == "ok"


def test_the_journal_keeps_only_the_latest_entries(tmp_path: Path) -> None:
    log = journal.Journal(UNIQUE_ID, tmp_path)
    for n in range(journal.MAX_ENTRIES + 30):
        log.record(journal.Entry(time=f"t{n}", command="program", outcome="ok"))
    entries = log.entries()
    assert len(entries) == journal.MAX_ENTRIES and entries[-1].time == f"t{journal.MAX_ENTRIES + 29}"


def test_an_unwritable_journal_never_fails_the_run(chip: Path, tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv(journal.JOURNAL_ENV, str(blocker))
    old, _ = images(tmp_path)
    result = f4load(old)
    assert result.exit_code == 0 and "cannot write the run journal" in result.stderr


def test_attach_to_a_freshly_powered_chip_sees_an_ordinary_power_up(chip: Path) -> None:
    causes = check(diagnosis("--attach"), "reset causes")
    assert causes["verdict"] == "ok" and causes["summary"] == "power-on: an ordinary power-up"


def test_attach_reports_the_iwdg_the_application_started_with_its_timeout_range(chip: Path) -> None:
    faults.inject(str(chip), "iwdg=200ms")
    watchdog = check(diagnosis("--attach"), "watchdog")
    assert watchdog["verdict"] == "warning"
    # PR /4, RLR 1599: 6400 LSI periods: 200 ms at 32 kHz, 136 ms at 47 kHz, 376 ms at 17 kHz
    assert watchdog["summary"].startswith("the application started the IWDG: timeout 136-376 ms (LSI 17-47 kHz)")
    assert check(diagnosis(), "watchdog")["verdict"] == "ok"  # under reset the application never starts it


def test_a_trial_erase_with_bsy_stuck_says_so_with_the_stubs_own_time(chip: Path) -> None:
    faults.inject(str(chip), "bsy-stuck")
    result = diagnosis("--trial-erase", 1, "--yes")
    trial = check(result, "trial erase")
    assert trial["verdict"] == "problem"
    assert trial["summary"] == ("the erase of sector 1 never completed: FLASH_SR.BSY stayed set for 1000 ms (the "
                                "stub's own time) against 0.5 s maximum")
    assert result["trial_erase"]["seconds"] == 1.0
    assert check(diagnosis(), "recent runs")["summary"] == \
        "the last run was stuck with FLASH_SR.BSY set during the erase of sector 1"  # the trial is journaled too
