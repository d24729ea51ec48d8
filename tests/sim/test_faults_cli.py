"""Faults of the virtual STM32F407: the text form, its errors, and the `f4load-sim` command line.

The command line runs as a subprocess, as a user runs it; its errors must be one line on stderr with no
traceback (exit 2 for a usage error, 1 for a state directory that cannot be used).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from f4load import registers as reg
from f4load.part import KB
from f4load.sim import faults as sim_faults
from f4load.sim import state as sim_state
from f4load.sim.chip import Chip
from f4load.sim.clock import PS_PER_MS
from f4load.sim.faults import FAULT_KINDS, Faults, FaultSpecError, ResetDuring, parse_fault_spec

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, state: Path, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("F4LOAD_SIM_")}
    environment["F4LOAD_SIM_STATE"] = str(state)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "f4load.sim.cli", *args], env=environment,
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def assert_one_line_error(result: subprocess.CompletedProcess, status: int, *needles: str) -> str:
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


# --- the text form: every fault --------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("wrp=0-3", Faults(write_protected=[0, 1, 2, 3])),
    ("wrp=0,2,5-7", Faults(write_protected=[0, 2, 5, 6, 7])),
    ("rdp1", Faults(rdp_level1=True)),
    ("hw-watchdog", Faults(hardware_watchdog=True)),
    ("iwdg=5ms", Faults(iwdg_timeout_ms=5.0)),
    ("iwdg=1.5s", Faults(iwdg_timeout_ms=1500.0)),
    ("iwdg=500us", Faults(iwdg_timeout_ms=0.5)),
    ("iwdg=20", Faults(iwdg_timeout_ms=20.0)),
    ("sticky=PGSERR,PGPERR", Faults(sticky_sr=reg.FLASH_SR_PGSERR | reg.FLASH_SR_PGPERR)),
    ("sticky=operr", Faults(sticky_sr=reg.FLASH_SR_OPERR)),
    ("bad-key", Faults(cr_locked_by_bad_key=True)),
    ("bsy-stuck", Faults(bsy_stuck=True)),
    ("reset=erase:3:middle:brownout", Faults(reset_during=[ResetDuring("erase", 3, "middle", "brownout")])),
    ("reset=program", Faults(reset_during=[ResetDuring("program", 1, "middle", "brownout")])),
    ("reset=program:10:start:iwdg", Faults(reset_during=[ResetDuring("program", 10, "start", "iwdg")])),
    ("disconnect=200", Faults(disconnect_after_commands=200)),
    ("vdd=2.0", Faults(supply_voltage=2.0)),
    ("vdd=1.8V", Faults(supply_voltage=1.8)),
    ("flash=1024", Faults(flash_kb=1024)),
    ("flash=512K", Faults(flash_kb=512)),
    ("clone", Faults(clone=True)),
    ("max-timing", Faults(max_timing=True)),
])
def test_each_fault_form_parses_to_its_field(text: str, expected: Faults) -> None:
    assert parse_fault_spec(text) == expected


def test_several_faults_separated_by_spaces_or_semicolons() -> None:
    assert parse_fault_spec("rdp1 iwdg=5ms;clone ; sticky=PGSERR") == Faults(
        rdp_level1=True, iwdg_timeout_ms=5.0, clone=True, sticky_sr=reg.FLASH_SR_PGSERR)


def test_adding_to_existing_faults_merges_lists_and_replaces_values() -> None:
    base = parse_fault_spec("wrp=0-1 sticky=PGSERR reset=erase:1 iwdg=5ms")
    added = parse_fault_spec("wrp=3 sticky=PGPERR reset=program:2 iwdg=10ms", base)
    assert added.write_protected == [0, 1, 3]
    assert added.sticky_sr == reg.FLASH_SR_PGSERR | reg.FLASH_SR_PGPERR
    assert added.reset_during == [ResetDuring("erase", 1), ResetDuring("program", 2)]
    assert added.iwdg_timeout_ms == 10.0
    assert base.write_protected == [0, 1], "the base is not changed"


def test_wrp_on_sectors_8_to_11_needs_the_1mb_part() -> None:
    with pytest.raises(FaultSpecError, match="sector 8 does not exist on a 512 KB part"):
        parse_fault_spec("wrp=8")
    assert parse_fault_spec("flash=1024 wrp=8-11").write_protected == [8, 9, 10, 11]


@pytest.mark.parametrize("text, message", [
    ("frobnicate", "unknown fault 'frobnicate'; known: wrp, rdp1, hw-watchdog, iwdg, sticky, bad-key, "
                   "bsy-stuck, reset, disconnect, vdd, flash, clone, max-timing"),
    ("rdp1=yes", "rdp1: takes no value"),
    ("wrp", "wrp: needs a value"),
    ("wrp=", "wrp: needs a value"),
    ("wrp=3-1", "wrp: range '3-1' runs backwards"),
    ("wrp=a", "wrp: 'a' is not a sector number"),
    ("wrp=12", "wrp: sector 12 does not exist"),
    ("iwdg=fast", "iwdg: 'fast' is not a timeout"),
    ("iwdg=0.1ms", "iwdg: timeout 0.1 ms is outside what the IWDG can count (0.125 ms to 32768 ms)"),
    ("iwdg=40s", "iwdg: timeout 40000.0 ms is outside"),
    ("sticky=EOP", "sticky: 'EOP' is not a FLASH_SR error flag; known: OPERR, WRPERR, PGAERR, PGPERR, PGSERR"),
    ("reset=format", "reset: operation 'format' is not one of erase, program"),
    ("reset=erase:0", "reset: operation count 0 must be a whole number >= 1"),
    ("reset=erase:x", "reset: 'x' is not a whole number"),
    ("reset=erase:1:end", "reset: phase 'end' is not one of start, middle"),
    ("reset=erase:1:start:lightning", "reset: cause 'lightning' is not one of brownout, pin, iwdg"),
    ("reset=erase:1:start:pin:extra", "reset: 'erase:1:start:pin:extra' is not OPERATION[:NTH[:PHASE[:CAUSE]]]"),
    ("disconnect=-1", "disconnect: command count -1 must be a whole number >= 0"),
    ("disconnect=soon", "disconnect: 'soon' is not a whole number"),
    ("vdd=5", "vdd: 5.0 V is outside the STM32F407 supply range (1.8 V to 3.6 V)"),
    ("vdd=low", "vdd: 'low' is not a voltage"),
    ("flash=2048", "flash: 2048 KB is not an STM32F405/407 size"),
])
def test_bad_fault_text_is_a_one_line_error(text: str, message: str) -> None:
    with pytest.raises(FaultSpecError) as caught:
        parse_fault_spec(text)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_text_form_of_every_fault_reads_back_the_same() -> None:
    everything = ("wrp=0-3,6 rdp1 hw-watchdog iwdg=5ms sticky=PGSERR,PGPERR bad-key bsy-stuck "
                  "reset=erase:3:middle:brownout reset=program:7:start:pin disconnect=200 vdd=2.0 flash=1024 "
                  "clone max-timing")
    faults = parse_fault_spec(everything)
    assert faults.to_text() == ("wrp=0-3,6 rdp1 hw-watchdog iwdg=5ms sticky=PGPERR,PGSERR bad-key bsy-stuck "
                                "reset=erase:3:middle:brownout reset=program:7:start:pin disconnect=200 "
                                "vdd=2 flash=1024 clone max-timing")
    assert parse_fault_spec(faults.to_text()) == faults
    assert Faults.from_dict(json.loads(json.dumps(faults.to_dict()))) == faults


def test_no_faults_is_the_empty_text() -> None:
    assert Faults().to_text() == ""
    assert parse_fault_spec("  ") == Faults()


faults_strategy = st.builds(
    Faults,
    write_protected=st.lists(st.integers(0, 7), unique=True).map(sorted),
    rdp_level1=st.booleans(),
    hardware_watchdog=st.booleans(),
    iwdg_timeout_ms=st.none() | st.floats(sim_faults.IWDG_MIN_MS, sim_faults.IWDG_MAX_MS),
    sticky_sr=st.sets(st.sampled_from(list(sim_faults.STICKY_SR_BITS.values()))).map(lambda s: sum(s)),
    cr_locked_by_bad_key=st.booleans(),
    bsy_stuck=st.booleans(),
    reset_during=st.lists(st.builds(ResetDuring, st.sampled_from(["erase", "program"]), st.integers(1, 99),
                                    st.sampled_from(["start", "middle"]),
                                    st.sampled_from(["brownout", "pin", "iwdg"])),
                          unique_by=ResetDuring.to_text, max_size=3),
    disconnect_after_commands=st.none() | st.integers(0, 10**6),
    supply_voltage=st.floats(sim_faults.VDD_MIN, sim_faults.VDD_MAX),
    flash_kb=st.sampled_from([512, 1024]),
    clone=st.booleans(),
    max_timing=st.booleans(),
    lsi_hz=st.integers(sim_faults.LSI_MIN_HZ, sim_faults.LSI_MAX_HZ),
)


@given(faults_strategy)
def test_any_valid_faults_survive_text_and_json(faults: Faults) -> None:
    assert parse_fault_spec(faults.to_text()) == faults
    assert Faults.from_dict(json.loads(json.dumps(faults.to_dict()))) == faults


def test_faults_json_with_an_unknown_key_is_refused() -> None:
    with pytest.raises(FaultSpecError, match="unknown fault 'gremlins'"):
        Faults.from_dict({"gremlins": True})


def test_validate_catches_wrong_types_set_from_python() -> None:
    with pytest.raises(FaultSpecError, match="rdp1: rdp_level1 must be true or false"):
        Faults(rdp_level1="yes").validate()  # type: ignore[arg-type]
    with pytest.raises(FaultSpecError, match="sticky: 256 has bits that are not FLASH_SR error flags"):
        Faults(sticky_sr=1 << 8).validate()


def test_every_fault_has_a_name_and_a_meaning_in_the_docs() -> None:
    docs = (REPO / "docs" / "faults.md").read_text()
    for kind in FAULT_KINDS:
        assert f"`{kind.usage}`" in docs, kind.name


# --- the Python API on a state directory ----------------------------------------------------------------
def test_inject_puts_option_byte_faults_into_the_option_bytes(sim_state_dir: Path) -> None:
    now = sim_faults.inject(str(sim_state_dir), "wrp=0-3 rdp1 hw-watchdog iwdg=5ms")
    assert now == Faults(write_protected=[0, 1, 2, 3], rdp_level1=True, hardware_watchdog=True,
                         iwdg_timeout_ms=5.0)
    options = json.loads((sim_state_dir / "options.json").read_text())
    assert options["optcr"] == 0x0FF0_55CC  # nWRP 0xFF0, RDP 0x55, WDG_SW 0, BOR off, nRST_* 1
    stored = json.loads((sim_state_dir / "faults.json").read_text())
    assert stored["write_protected"] == [] and stored["rdp_level1"] is False
    assert stored["iwdg_timeout_ms"] == 5.0


def test_inject_accepts_a_faults_object(sim_state_dir: Path) -> None:
    sim_faults.inject(str(sim_state_dir), Faults(bsy_stuck=True))
    assert sim_state.load_state(sim_state_dir).faults == Faults(bsy_stuck=True)


def test_clear_removes_faults_and_restores_the_option_bytes_but_keeps_flash(sim_state_dir: Path) -> None:
    state = sim_state.load_state(sim_state_dir)
    state.flash[0:4] = b"\x00\x01\x02\x03"
    sim_state.save_state(state, sim_state_dir)
    sim_faults.inject(str(sim_state_dir), "flash=1024 wrp=9 rdp1 bsy-stuck")
    sim_faults.clear(str(sim_state_dir))
    after = sim_state.load_state(sim_state_dir)
    assert after.faults == Faults(flash_kb=1024)
    assert after.options.optcr == 0x0FFF_AAEC
    assert after.flash[0:4] == b"\x00\x01\x02\x03"


def test_flash_fault_changes_the_part_and_keeps_the_image(sim_state_dir: Path) -> None:
    state = sim_state.load_state(sim_state_dir)
    state.flash[-1] = 0x42
    sim_state.save_state(state, sim_state_dir)
    sim_faults.inject(str(sim_state_dir), "flash=1024")
    assert (sim_state_dir / "flash.bin").stat().st_size == 1024 * KB
    bigger = sim_state.load_state(sim_state_dir)
    assert bigger.flash[512 * KB - 1] == 0x42
    assert bigger.flash[512 * KB:] == b"\xff" * (512 * KB)


def test_bad_spec_leaves_the_state_directory_alone(sim_state_dir: Path) -> None:
    sim_faults.inject(str(sim_state_dir), "clone")
    before = (sim_state_dir / "faults.json").read_bytes()
    with pytest.raises(FaultSpecError):
        sim_faults.inject(str(sim_state_dir), "bsy-stuck nonsense")
    assert (sim_state_dir / "faults.json").read_bytes() == before


# --- the command line -----------------------------------------------------------------------------------
def test_status_of_a_fresh_chip(tmp_path: Path) -> None:
    state = tmp_path / "chip"
    result = run_cli("status", state=state)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"state directory: {state}"
    assert lines[1].startswith("chip: STM32F407VE, 512 KB flash, unique ID ")
    assert "  sector  0  0x08000000   16 KB  erased" in lines
    assert "  sector  7  0x08060000  128 KB  erased" in lines
    assert not any("sector  8" in line for line in lines)
    assert "option bytes: OPTCR user bits 0x0FFFAAEC" in lines
    assert "  RDP        0xAA: level 0 (no protection)" in lines
    assert "  nWRP       0xFFF: no sector write-protected" in lines
    assert "  WDG_SW     1: software watchdog (IWDG off until software starts it)" in lines
    assert "  BOR_LEV    11: BOR off (1.80-2.10 V)" in lines
    assert "  OTP        0 of 16 blocks programmed, 0 locked" in lines
    assert lines[-1] == "faults: none"


def test_status_with_faults_and_programmed_flash(tmp_path: Path) -> None:
    state = tmp_path / "chip"
    chip = sim_state.load_state(state)
    chip.flash[0x4000:0x4010] = bytes(16)
    sim_state.save_state(chip, state)
    assert run_cli("fault", "wrp=0-3", "hw-watchdog", "sticky=PGSERR", state=state).returncode == 0
    result = run_cli("status", state=state, env={"F4LOAD_SIM_FAULTS": "vdd=2.0"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  sector  0  0x08000000   16 KB  erased" in lines
    assert "  sector  1  0x08004000   16 KB  non-blank (16 bytes not 0xFF)" in lines
    assert "  nWRP       0xFF0: sectors 0-3 write-protected" in lines
    assert "  WDG_SW     0: hardware watchdog (IWDG runs from every reset)" in lines
    assert "  RDP        0xAA: level 0 (no protection)" in lines
    faults_at = lines.index("faults:")
    shown = [line.split(":")[0].strip() for line in lines[faults_at + 1:]]
    assert shown == ["wrp=0-3", "hw-watchdog", "sticky=PGSERR", "vdd=2"]
    assert lines[-1].endswith("(from F4LOAD_SIM_FAULTS)")


def test_fault_command_prints_the_faults_now_active(tmp_path: Path) -> None:
    result = run_cli("fault", "iwdg=5ms", "reset=erase:3", state=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"faults in {tmp_path}: iwdg=5ms reset=erase:3:middle:brownout"


def test_fault_clear_then_status_shows_none(tmp_path: Path) -> None:
    run_cli("fault", "rdp1", "bad-key", state=tmp_path)
    cleared = run_cli("fault", "--clear", state=tmp_path)
    assert cleared.stdout.strip() == f"faults in {tmp_path}: none"
    status = run_cli("status", state=tmp_path)
    assert status.stdout.splitlines()[-1] == "faults: none"
    assert "  RDP        0xAA: level 0 (no protection)" in status.stdout.splitlines()


def test_reset_gives_a_factory_new_chip(tmp_path: Path) -> None:
    chip = sim_state.load_state(tmp_path)
    chip.flash[:] = bytes(len(chip.flash))
    sim_state.save_state(chip, tmp_path)
    run_cli("fault", "rdp1", "clone", state=tmp_path)
    result = run_cli("reset", state=tmp_path)
    assert result.returncode == 0, result.stderr
    fresh = sim_state.load_state(tmp_path)
    assert fresh.flash == b"\xff" * (512 * KB)
    assert fresh.options.optcr == 0x0FFF_AAEC
    assert fresh.faults == Faults()


def test_faults_command_lists_every_known_fault() -> None:
    result = subprocess.run([sys.executable, "-m", "f4load.sim.cli", "faults"], capture_output=True, text=True,
                            timeout=60)
    names = [line.split()[0].split("=")[0] for line in result.stdout.splitlines()[:-1]]
    assert names == [kind.name for kind in FAULT_KINDS]
    assert "wrp=SECTORS" in result.stdout and "[option bytes]" in result.stdout


def test_state_option_works_before_and_after_the_command(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    unused = tmp_path / "unused"  # what F4LOAD_SIM_STATE says: --state wins over it
    assert run_cli("--state", str(first), "fault", "clone", state=unused).returncode == 0
    assert run_cli("fault", "--state", str(second), "bsy-stuck", state=unused).returncode == 0
    assert sim_state.read_stored_faults(first) == Faults(clone=True)
    assert sim_state.read_stored_faults(second) == Faults(bsy_stuck=True)
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize("args, message", [
    (("fault", "frobnicate"), "f4load-sim: error: unknown fault 'frobnicate'; known: wrp, rdp1"),
    (("fault", "vdd=9"), "f4load-sim: error: vdd: 9.0 V is outside the STM32F407 supply range"),
    (("fault",), "f4load-sim: error: give at least one fault"),
    (("explode",), "f4load-sim: error: No such command 'explode'"),
    (("status", "--colour"), "f4load-sim: error: No such option"),
])
def test_usage_errors_are_one_line_and_exit_2(tmp_path: Path, args: tuple, message: str) -> None:
    assert_one_line_error(run_cli(*args, state=tmp_path), 2, message)


def test_bad_fault_environment_variable_is_a_state_error(tmp_path: Path) -> None:
    result = run_cli("status", state=tmp_path, env={"F4LOAD_SIM_FAULTS": "rdp1 gremlins"})
    assert_one_line_error(result, 1, "F4LOAD_SIM_FAULTS: unknown fault 'gremlins'")


def test_no_command_prints_help(tmp_path: Path) -> None:
    result = run_cli(state=tmp_path)
    assert result.returncode == 0
    assert "status" in result.stdout and "fault" in result.stdout


def test_the_lsi_fault_reads_khz_and_round_trips():
    spec = parse_fault_spec("lsi=47k")
    assert spec.lsi_hz == 47_000
    assert spec.to_text() == "lsi=47k"
    assert parse_fault_spec("lsi=17500Hz").to_text() == "lsi=17500"
    assert Faults.from_dict(spec.to_dict()) == spec


def test_an_lsi_outside_the_datasheet_range_is_refused():
    with pytest.raises(FaultSpecError, match="17 kHz to 47 kHz"):
        parse_fault_spec("lsi=50k")


def test_the_chip_runs_the_iwdg_from_the_faulted_lsi():
    chip = Chip(parse_fault_spec("lsi=47k hw-watchdog"))
    chip.apply_option_faults()
    chip.power_on()
    assert chip.iwdg.lsi_hz == 47_000
    assert chip.iwdg.timeout_ps < 350 * PS_PER_MS  # 512 ms nominal, 32/47 of it
