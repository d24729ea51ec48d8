"""The `f4load` command line on the virtual STM32F407: what a user types and what they get.

Every test has a factory-new virtual chip of its own (conftest's `sim_state_dir`) on the ideal link, and runs
the command in-process through click's CliRunner. What ends up in flash is read from the chip's saved state
(`f4load.sim.state`), not through f4load, so a test never trusts the tool it checks.
"""
from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import bincopy
import pytest
from click.testing import CliRunner, Result

from f4load import stream
from f4load.cli import EXIT_FLASH, EXIT_LINK, EXIT_PROBE, EXIT_USAGE, EXIT_VERIFY, _amount, cli
from f4load.errors import SessionError
from f4load.image import load_image
from f4load.part import FLASH_START, KB, sectors_for
from f4load.protocol import const
from f4load.registers import DMA_SXCR_EN, WWDG_CR_WDGA
from f4load.running_peripherals import RunningPeripherals, peripheral_hazards
from f4load.session import Session
from f4load.sim import faults
from f4load.sim.state import load_state

REPO = Path(__file__).resolve().parent.parent
SECTORS = sectors_for(512 * KB)




def f4load(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def flash(state_dir: Path, address: int = FLASH_START, size: int = 512 * KB) -> bytes:
    """What the virtual chip's flash holds (its saved state)."""
    offset = address - FLASH_START
    return bytes(load_state(state_dir, use_environment=False).flash[offset:offset + size])


def data(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def report(result: Result) -> Dict[str, Any]:
    return json.loads(result.stdout)


# --- programming -----------------------------------------------------------------------------------------

def test_programming_a_bin_puts_its_bytes_at_the_start_of_flash(chip: Path, tmp_path: Path) -> None:
    app = data(40_000, seed=1)
    result = f4load(write(tmp_path / "app.bin", app))
    assert result.exit_code == 0, result.output
    assert flash(chip, FLASH_START, len(app)) == app
    assert flash(chip, FLASH_START + len(app), 8 * KB) == b"\xff" * 8 * KB
    assert "programmed 40,000 bytes" in result.stdout and "verified by CRC" in result.stdout


def test_program_subcommand_and_address_option_place_a_bin(chip: Path, tmp_path: Path) -> None:
    app = data(3000, seed=2)
    result = f4load("program", write(tmp_path / "app.bin", app), "--address", "0x08020000")
    assert result.exit_code == 0, result.output
    assert flash(chip, 0x0802_0000, len(app)) == app
    assert flash(chip, FLASH_START, 128 * KB) == b"\xff" * 128 * KB


@pytest.mark.parametrize("kind", ["hex", "srec"])
def test_programming_hex_and_srec_files_writes_their_records(chip: Path, tmp_path: Path, kind: str) -> None:
    first, second = data(5000, seed=3), data(700, seed=4)
    records = bincopy.BinFile()
    records.add_binary(first, address=FLASH_START + 0x100)
    records.add_binary(second, address=SECTORS[5].start + 3)  # an odd address in a 128 KB sector
    text = records.as_ihex() if kind == "hex" else records.as_srec()
    result = f4load(write(tmp_path / f"app.{kind}", text.encode()))
    assert result.exit_code == 0, result.output
    assert flash(chip, FLASH_START + 0x100, len(first)) == first
    assert flash(chip, SECTORS[5].start + 3, len(second)) == second
    assert flash(chip, SECTORS[1].start, SECTORS[5].start - SECTORS[1].start) == b"\xff" * (
        SECTORS[5].start - SECTORS[1].start)


@pytest.fixture(scope="module")
def blinky(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """examples/blinky.c linked by arm-none-eabi-gcc, and objcopy's binary of it."""
    gcc = shutil.which("arm-none-eabi-gcc")
    assert gcc, "arm-none-eabi-gcc is required (Debian gcc-arm-none-eabi)"
    out = tmp_path_factory.mktemp("blinky")
    flags = ["-mcpu=cortex-m4", "-mthumb", "-Os", "-nostdlib", "-ffreestanding"]
    subprocess.run([gcc, *flags, "-T", str(REPO / "examples" / "blinky.ld"), str(REPO / "examples" / "blinky.c"),
                    "-o", str(out / "blinky.elf")], check=True)
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "blinky.elf", "blinky.bin"], cwd=out, check=True)
    return {"elf": out / "blinky.elf", "bin": out / "blinky.bin"}


def test_programming_an_elf_writes_what_objcopy_extracts(chip: Path, blinky: Dict[str, Path]) -> None:
    result = f4load(blinky["elf"])
    assert result.exit_code == 0, result.output
    expected = blinky["bin"].read_bytes()
    assert flash(chip, FLASH_START, len(expected)) == expected


def test_json_report_says_what_was_erased_programmed_and_skipped(chip: Path, tmp_path: Path) -> None:
    app = data(20 * KB, seed=5)  # sector 0 and a quarter of sector 1
    result = f4load(write(tmp_path / "app.bin", app), "--json")
    assert result.exit_code == 0, result.output
    out = report(result)
    assert (out["command"], out["result"], out["exit_code"], out["error"]) == ("program", "ok", 0, None)
    assert out["file"]["size"] == len(app) and out["file"]["format"] == "bin"
    assert out["target"]["part"] == "STM32F407VE" and out["target"]["dev_id"] == 0x413
    assert out["target"]["psize"] == "x32" and out["target"]["flash_kb"] == 512
    assert [(s["index"], s["action"]) for s in out["sectors"]] == [(0, "program"), (1, "program")]  # blank
    assert out["erased_sectors"] == [] and out["bytes_erased"] == 0
    assert out["bytes_programmed"] == len(app)
    assert out["verified"] is True
    assert out["time"]["work_virtual_s"] > 0 and out["time"]["floor_s"] == pytest.approx(len(app) / 4 * 16e-6)
    assert out["time"]["ratio_to_floor"] >= 1.0
    assert out["time"]["session_virtual_s"] >= out["time"]["work_virtual_s"]
    assert out["probe_commands"] > 0


def test_an_identical_second_run_erases_and_programs_nothing(chip: Path, tmp_path: Path) -> None:
    app = write(tmp_path / "app.bin", data(150 * KB, seed=6))
    assert f4load(app).exit_code == 0
    out = report(f4load(app, "--json"))
    assert out["result"] == "ok"
    assert (out["bytes_erased"], out["bytes_programmed"]) == (0, 0)
    assert {s["action"] for s in out["sectors"]} == {"skip"}
    assert out["skipped_sectors"] == [0, 1, 2, 3, 4, 5]


def test_a_one_byte_change_erases_and_programs_only_its_sector(chip: Path, tmp_path: Path) -> None:
    app = bytearray(data(150 * KB, seed=7))
    assert f4load(write(tmp_path / "app.bin", bytes(app))).exit_code == 0
    changed = SECTORS[4].start + 1234 - FLASH_START
    app[changed] ^= 0xFF
    out = report(f4load(write(tmp_path / "app.bin", bytes(app)), "--json"))
    assert out["result"] == "ok"
    assert out["erased_sectors"] == [4]
    assert [s["index"] for s in out["sectors"] if s["action"] != "skip"] == [4]
    assert out["bytes_erased"] == 64 * KB and out["bytes_programmed"] == 64 * KB
    assert flash(chip, FLASH_START, len(app)) == bytes(app)


def test_bytes_around_the_image_in_a_touched_sector_are_kept(chip: Path, tmp_path: Path) -> None:
    before = data(16 * KB, seed=8)
    assert f4load(write(tmp_path / "old.bin", before)).exit_code == 0
    patch = b"\x01\x02\x03\x04" * 64
    assert f4load(write(tmp_path / "patch.bin", patch), "--address", FLASH_START + 0x1000).exit_code == 0
    assert flash(chip, FLASH_START, 16 * KB) == before[:0x1000] + patch + before[0x1000 + len(patch):]


def test_no_keep_leaves_the_rest_of_a_touched_sector_erased(chip: Path, tmp_path: Path) -> None:
    assert f4load(write(tmp_path / "old.bin", data(16 * KB, seed=9))).exit_code == 0
    patch = b"\x5a" * 256
    assert f4load(write(tmp_path / "patch.bin", patch), "--address", FLASH_START + 0x1000, "--no-keep").exit_code == 0
    assert flash(chip, FLASH_START, 16 * KB) == b"\xff" * 0x1000 + patch + b"\xff" * (16 * KB - 0x1000 - 256)


# --- bad input: one line, a non-zero exit, nothing erased ---------------------------------------------------

def _bad_files(tmp_path: Path) -> Dict[str, Path]:
    hex_lines = bincopy.BinFile()
    hex_lines.add_binary(b"\x11" * 64, address=FLASH_START)
    lines = hex_lines.as_ihex().splitlines()
    checksum = int(lines[1][-2:], 16)
    lines[1] = lines[1][:-2] + f"{(checksum + 1) % 256:02X}"  # a data record with a wrong checksum
    corrupt = "\n".join(lines) + "\n"
    return {
        "missing": tmp_path / "missing.bin",
        "empty": write(tmp_path / "empty.bin", b""),
        "corrupt-hex": write(tmp_path / "corrupt.hex", corrupt.encode()),
        "too-large": write(tmp_path / "big.bin", b"\x22" * (512 * KB + 4)),
        "in-ram": write(tmp_path / "ram.srec", _srec_at(0x2000_0000, b"\x33" * 16)),
        "unknown-format": write(tmp_path / "app.xyz", b"\x00\x01\x02"),
    }


def _srec_at(address: int, content: bytes) -> bytes:
    records = bincopy.BinFile()
    records.add_binary(content, address=address)
    return records.as_srec().encode()


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt-hex", "too-large", "in-ram", "unknown-format"])
def test_bad_input_file_is_one_line_exit_2_and_leaves_flash_untouched(chip: Path, tmp_path: Path,
                                                                      case: str) -> None:
    original = data(16 * KB, seed=10)
    assert f4load(write(tmp_path / "original.bin", original)).exit_code == 0
    result = f4load(_bad_files(tmp_path)[case])
    assert result.exit_code == EXIT_USAGE
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("f4load: error: "), result.stderr
    assert flash(chip, FLASH_START, 16 * KB) == original
    assert flash(chip, SECTORS[1].start, 512 * KB - 16 * KB) == b"\xff" * (512 * KB - 16 * KB)


def test_bad_input_with_json_still_prints_a_report(chip: Path, tmp_path: Path) -> None:
    result = f4load(tmp_path / "missing.hex", "--json")
    assert result.exit_code == EXIT_USAGE
    out = report(result)
    assert (out["result"], out["exit_code"], out["error"]["type"]) == ("failed", 2, "ImageError")
    assert "no such file" in out["error"]["message"]


# --- the summary line and the progress bar ------------------------------------------------------------------

def test_a_large_job_gives_its_virtual_time_as_a_ratio_to_the_physical_floor(chip: Path, tmp_path: Path) -> None:
    result = f4load(write(tmp_path / "app.bin", data(40_000, seed=30)))  # 10,000 writes: floor 0.160 s
    assert result.exit_code == 0, result.output
    assert "programmed 40,000 bytes into blank flash (no erase)" in result.stdout
    assert "x the physical floor 0.160 s" in result.stdout
    assert "0 KB" not in result.stdout


def test_a_tiny_image_names_its_floor_without_a_ratio(chip: Path, tmp_path: Path) -> None:
    # 84 bytes = 21 writes of 16 us: a ratio to 0.34 ms would measure the link and the stub's setup.
    result = f4load(write(tmp_path / "blinky.bin", data(84, seed=31)), "--json")
    assert result.exit_code == 0, result.output
    assert report(result)["time"]["ratio_to_floor"] > 1  # still in the JSON report
    result = f4load(write(tmp_path / "other.bin", data(84, seed=32)), "--address", SECTORS[1].start)  # blank
    assert result.exit_code == 0, result.output
    assert "(floor 0.34 ms: time is link/setup overhead)" in result.stdout
    assert "x the physical floor" not in result.stdout


def test_an_unchanged_image_says_there_was_nothing_to_change(chip: Path, tmp_path: Path) -> None:
    app = write(tmp_path / "app.bin", data(84, seed=33))
    assert f4load(app).exit_code == 0
    result = f4load(app)
    assert result.exit_code == 0, result.output
    assert "nothing to change: 16 KB (sector 0) already holds the image" in result.stdout
    assert "(no erase or program: floor 0)" in result.stdout


def test_erasing_blank_sectors_says_there_was_nothing_to_erase(chip: Path) -> None:
    result = f4load("erase", "0-1")
    assert result.exit_code == 0, result.output
    assert "nothing to erase: 32 KB (sectors 0, 1) already blank" in result.stdout


def test_progress_counts_bytes_under_one_kilobyte_and_kilobytes_above() -> None:
    assert _amount(84, 84) == "84/84 bytes"
    assert _amount(8 * KB, 256 * KB) == "8/256 KB"


# --- the session: one stub load per command ---------------------------------------------------------------

def _count_stub_loads(session: Session) -> List[int]:
    """Wraps the target's block write to count writes of the stub image (with the halt word before it)."""
    layout = session.stub_image.layout(const("F4LOAD_RAM_BASE"))
    loads: List[int] = []
    write_block = session.target.write_memory_block32

    def counting(address: int, words: Sequence[int]) -> None:
        if address in (layout.halt_address, layout.load_address) and len(words) * 4 >= len(session.stub_image.image):
            loads.append(address)
        write_block(address, words)

    session.target.write_memory_block32 = counting
    return loads


def test_program_loads_the_stub_once_for_crcs_work_and_verify(chip: Path, tmp_path: Path) -> None:
    app = data(40 * KB, seed=34)
    assert f4load(write(tmp_path / "old.bin", app)).exit_code == 0
    changed = bytearray(app)
    changed[20 * KB] ^= 0xFF  # sector 1 changes: CRC pass, erase + program, verify CRC
    image = load_image(str(write(tmp_path / "app.bin", bytes(changed))))
    seen: List[Tuple[str, int]] = []
    with Session(probe="sim") as session:
        loads = _count_stub_loads(session)
        outcome = session.program(image, progress=lambda op, n: seen.append((type(op).__name__, n)))
    assert len(loads) == 1 and len(outcome.streams) == 1  # one load, one batch: CRCs, work and verify
    assert [s.index for s in outcome.erased] == [1] and outcome.verified
    assert ("EraseSector", 16 * KB) in seen
    assert sum(n for kind, n in seen if kind == "Program") == outcome.bytes_programmed
    assert flash(chip, FLASH_START, len(changed)) == bytes(changed)


def test_option_bytes_are_refused_while_the_stub_is_loaded(chip: Path) -> None:
    # The option-byte wait loop runs in SRAM where the stub keeps its buffers.
    with Session(probe="sim") as session:
        assert session.info is not None
        before = session.info.options
        with session.stub() as runner:
            with pytest.raises(SessionError, match="while the flash stub is loaded"):
                session.set_option_bytes(before.protecting([3]))
            report = runner.run([stream.Crc(FLASH_START, 16 * KB)])
        assert session.set_option_bytes(before.protecting([3])).write_protected(session.info.part) == [3]
    assert len(report.crcs) == 1  # the stub still worked after the refusal


# --- failures on the target: exit status per class ------------------------------------------------------------

def test_write_protected_sector_fails_before_anything_is_erased(chip: Path, tmp_path: Path) -> None:
    faults.inject(str(chip), "wrp=1")
    app = data(40 * KB, seed=11)  # sectors 0, 1, 2
    result = f4load(write(tmp_path / "app.bin", app))
    assert result.exit_code == EXIT_FLASH
    assert "sector 1 is write-protected" in result.stderr and "nothing was erased" in result.stderr
    assert "Run `f4load unprotect 1`" in result.stderr
    assert flash(chip, FLASH_START, 64 * KB) == b"\xff" * 64 * KB


def test_read_protection_is_refused_before_anything_is_erased(chip: Path, tmp_path: Path) -> None:
    faults.inject(str(chip), "rdp1")
    result = f4load(write(tmp_path / "app.bin", data(1000, seed=22)))
    assert result.exit_code == EXIT_FLASH
    assert "read-out protection level 1" in result.stderr
    assert "Run `f4load rdp 0`" in result.stderr and "mass-erases the whole flash" in result.stderr
    assert flash(chip, FLASH_START, 16 * KB) == b"\xff" * 16 * KB


def test_a_failure_the_stub_reports_names_operation_sector_and_exits_1(chip: Path, tmp_path: Path) -> None:
    faults.inject(str(chip), "bsy-stuck")
    result = f4load(write(tmp_path / "app.bin", data(1000, seed=23)), "--address", SECTORS[5].start, "--json")
    assert result.exit_code == EXIT_FLASH
    error = report(result)["error"]
    assert (error["operation"], error["kind"], error["sector"]) == ("ProgramPage", "BSY_TIMEOUT", 5)
    assert error["address"] == SECTORS[5].start


def test_reset_during_an_erase_exits_4(chip: Path, tmp_path: Path) -> None:
    app = data(40 * KB, seed=12)
    assert f4load(write(tmp_path / "old.bin", app)).exit_code == 0
    faults.inject(str(chip), "reset=erase:1:middle:brownout")
    result = f4load(write(tmp_path / "app.bin", data(40 * KB, seed=13)), "--json")
    assert result.exit_code == EXIT_LINK
    out = report(result)
    assert out["error"]["type"] == "LinkError" and "reset" in out["error"]["message"]


# --- the bytes kept around the image survive a failure: a backup before their sector's erase ----------------

def backups(chip: Path) -> List[Path]:
    return sorted((chip.parent / "backups").glob("*.hex"))


def test_a_reset_mid_erase_names_the_backup_that_restores_the_kept_bytes(
        chip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = data(48 * KB, seed=30)  # sectors 0-2, e.g. calibration values in sector 2
    assert f4load(write(tmp_path / "old.bin", old)).exit_code == 0
    patch = data(256, seed=31)
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", "reset=erase:1:middle:brownout")
    result = f4load(write(tmp_path / "patch.bin", patch), "--address", SECTORS[2].start + 0x1000, "--json")
    assert result.exit_code == EXIT_LINK
    error = report(result)["error"]
    [backup] = backups(chip)
    assert error["backup"] == str(backup) and error["restore"] == f"f4load {backup}"
    assert f"f4load {backup}" in result.stderr
    lost = flash(chip, SECTORS[2].start, 16 * KB)
    assert lost != old[32 * KB:]  # the half-done erase destroyed the kept bytes on the chip
    monkeypatch.delenv("F4LOAD_SIM_FAULTS")
    restored = f4load(backup)
    assert restored.exit_code == 0, restored.output
    sector2 = flash(chip, SECTORS[2].start, 16 * KB)
    assert sector2[:0x1000] == old[32 * KB:32 * KB + 0x1000]
    assert sector2[0x1100:] == old[32 * KB + 0x1100:]
    assert flash(chip, FLASH_START, 32 * KB) == old[:32 * KB]


def test_a_successful_program_removes_its_backup(chip: Path, tmp_path: Path) -> None:
    assert f4load(write(tmp_path / "old.bin", data(16 * KB, seed=32))).exit_code == 0
    result = f4load(write(tmp_path / "patch.bin", b"\x42" * 64), "--address", FLASH_START + 0x400)
    assert result.exit_code == 0, result.output
    assert backups(chip) == []


def test_keep_backup_leaves_the_kept_bytes_in_an_intel_hex_file(chip: Path, tmp_path: Path) -> None:
    old = data(16 * KB, seed=33)
    assert f4load(write(tmp_path / "old.bin", old)).exit_code == 0
    result = f4load(write(tmp_path / "patch.bin", b"\x42" * 64), "--address", FLASH_START + 0x400, "--keep-backup",
                    "--json")
    assert result.exit_code == 0, result.output
    [backup] = backups(chip)
    assert report(result)["backup"] == str(backup)
    kept = load_image(str(backup))
    assert [(s.address, s.data) for s in kept.segments] == [
        (FLASH_START, old[:0x400]), (FLASH_START + 0x440, old[0x440:])]


def test_programming_a_blank_sector_writes_no_backup(chip: Path, tmp_path: Path) -> None:
    result = f4load(write(tmp_path / "app.bin", data(1000, seed=34)), "--keep-backup")
    assert result.exit_code == 0, result.output
    assert backups(chip) == []


# --- peripherals an application left running (--connect halt/attach) ----------------------------------------

def test_connect_halt_reads_wwdg_and_dma_and_programs_when_none_runs(chip: Path, tmp_path: Path) -> None:
    # The virtual chip does not model the WWDG or the DMA controllers: their registers read 0 and writes to
    # them are ignored, so on it the check always finds nothing running. The refusals are specified below on
    # register values (peripheral_hazards).
    app = data(2000, seed=35)
    result = f4load(write(tmp_path / "app.bin", app), "--connect", "halt")
    assert result.exit_code == 0, result.output
    assert flash(chip, FLASH_START, len(app)) == app


def idle_peripherals() -> RunningPeripherals:
    return RunningPeripherals(wwdg_cr=0x7F, dma_sxcr={(c, s): 0 for c in (1, 2) for s in range(8)})


def test_peripherals_in_their_reset_state_are_no_hazard() -> None:
    assert peripheral_hazards(idle_peripherals()) == []


def test_an_enabled_window_watchdog_is_a_hazard_naming_wdga() -> None:
    state = RunningPeripherals(wwdg_cr=0x7F | WWDG_CR_WDGA, dma_sxcr=idle_peripherals().dma_sxcr)
    [hazard] = peripheral_hazards(state)
    assert "window watchdog" in hazard and "WDGA" in hazard and "cannot be stopped" in hazard


def test_enabled_dma_streams_are_named_by_controller_and_stream() -> None:
    streams = dict(idle_peripherals().dma_sxcr)
    streams[(2, 0)] = 0x0C00_0401 | DMA_SXCR_EN
    streams[(1, 5)] = DMA_SXCR_EN
    [hazard] = peripheral_hazards(RunningPeripherals(wwdg_cr=0x7F, dma_sxcr=streams))
    assert hazard.startswith("DMA1 stream 5, DMA2 stream 0 are enabled") and "SRAM" in hazard


def test_an_unknown_probe_exits_3(chip: Path, tmp_path: Path) -> None:
    result = f4load("info", "--probe", "no-such-probe-0000")
    assert result.exit_code == EXIT_PROBE
    assert "no-such-probe-0000" in result.stderr


def test_attach_to_an_application_whose_watchdog_runs_still_programs(chip: Path, tmp_path: Path) -> None:
    # The application starts a 5 ms IWDG; over the ST-Link V2 link model each probe command takes 1 ms, so
    # the watchdog must be frozen before the core is halted, not after.
    faults.inject(str(chip), "iwdg=5ms")
    app = data(2000, seed=24)
    result = f4load(write(tmp_path / "app.bin", app), "--connect", "attach", "--sim-link", "stlink-v2")
    assert result.exit_code == 0, result.output
    assert flash(chip, FLASH_START, len(app)) == app


def test_verbose_prints_the_plan_one_line_per_sector(chip: Path, tmp_path: Path) -> None:
    result = f4load(write(tmp_path / "app.bin", data(20 * KB, seed=25)), "-v")
    assert result.exit_code == 0, result.output
    assert "2 sectors touched" in result.stderr
    assert "sector  0 0x08000000" in result.stderr and "sector  1 0x08004000" in result.stderr


# --- erase, verify, read, info ---------------------------------------------------------------------------

def test_erase_erases_the_sectors_named_and_no_other(chip: Path, tmp_path: Path) -> None:
    app = data(80 * KB, seed=14)  # sectors 0-4
    assert f4load(write(tmp_path / "app.bin", app)).exit_code == 0
    result = f4load("erase", "1-2,4", "--json")
    assert result.exit_code == 0, result.output
    assert report(result)["erased_sectors"] == [1, 2, 4]
    assert flash(chip, SECTORS[0].start, 16 * KB) == app[:16 * KB]
    assert flash(chip, SECTORS[1].start, 32 * KB) == b"\xff" * 32 * KB
    assert flash(chip, SECTORS[3].start, 16 * KB) == app[48 * KB:64 * KB]
    assert flash(chip, SECTORS[4].start, 64 * KB) == b"\xff" * 64 * KB


def test_erase_chip_leaves_the_whole_flash_blank(chip: Path, tmp_path: Path) -> None:
    assert f4load(write(tmp_path / "app.bin", data(20 * KB, seed=15)), "--address", SECTORS[6].start).exit_code == 0
    assert f4load(write(tmp_path / "low.bin", data(100, seed=16))).exit_code == 0
    result = f4load("erase", "--chip")
    assert result.exit_code == 0, result.output
    assert flash(chip) == b"\xff" * 512 * KB
    assert "erased 144 KB (sectors 0, 6)" in result.stdout  # the blank sectors were skipped


def test_erase_of_a_sector_the_part_does_not_have_is_a_usage_error(chip: Path) -> None:
    result = f4load("erase", "8")
    assert result.exit_code == EXIT_USAGE
    assert "sectors 0-7 only" in result.stderr


def test_verify_passes_on_the_programmed_file(chip: Path, tmp_path: Path) -> None:
    app = write(tmp_path / "app.bin", data(30 * KB + 3, seed=17))
    assert f4load(app).exit_code == 0
    result = f4load("verify", app)
    assert result.exit_code == 0, result.output
    assert "the flash matches" in result.stdout


def test_verify_reports_a_difference_with_exit_5(chip: Path, tmp_path: Path) -> None:
    app = write(tmp_path / "app.bin", data(30 * KB, seed=18))
    assert f4load(app).exit_code == 0
    assert f4load("erase", "1").exit_code == 0
    result = f4load("verify", app)
    assert result.exit_code == EXIT_VERIFY
    assert "sector 1" in result.stderr and f"first differing byte at {SECTORS[1].start:#010x}" in result.stderr


def test_read_writes_the_flash_contents_to_a_file(chip: Path, tmp_path: Path) -> None:
    app = data(10 * KB, seed=19)
    assert f4load(write(tmp_path / "app.bin", app)).exit_code == 0
    out = tmp_path / "out.bin"
    result = f4load("read", "0x08000003", "4K", out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == app[3:3 + 4 * KB]


def test_read_to_stdout_writes_only_the_data_there(chip: Path, tmp_path: Path) -> None:
    app = data(300, seed=26)
    assert f4load(write(tmp_path / "app.bin", app)).exit_code == 0
    result = f4load("read", FLASH_START + 100, 100, "-")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == app[100:200]
    assert "read 100 bytes" in result.stderr


def test_info_shows_identity_flash_options_and_supply(chip: Path) -> None:
    result = f4load("info")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "DEV_ID 0x413" in text and "REV_ID 0x1007" in text
    assert "512 KB, sectors 0-7" in text
    assert "RDP        level 0 (0xaa)" in text and "no sector protected" in text
    assert "3.30 V (measured by the probe) -> x32" in text
    unique_id = load_state(chip, use_environment=False).unique_id.hex()
    assert f"unique ID    {unique_id}" in text


def test_info_json_decodes_the_option_bytes(chip: Path) -> None:
    faults.inject(str(chip), "wrp=0,5 hw-watchdog flash=1024")
    out = report(f4load("info", "--json"))
    target = out["target"]
    assert target["flash_kb"] == 1024 and target["sectors"] == 12
    assert target["option_bytes"]["write_protected_sectors"] == [0, 5]
    assert target["option_bytes"]["wdg_sw"] is False
    assert target["option_bytes"]["rdp_level"] == 0


def test_low_supply_voltage_chooses_narrower_parallelism(chip: Path, tmp_path: Path) -> None:
    faults.inject(str(chip), "vdd=2.0")
    app = data(5000, seed=20)
    result = f4load(write(tmp_path / "app.bin", app), "--json")
    assert result.exit_code == 0, result.output
    out = report(result)
    assert (out["target"]["vdd"], out["target"]["psize"]) == (2.0, "x8")
    assert out["program_writes"] == sum(1 for b in app if b != 0xFF)  # at x8 one write per byte that is not 0xFF
    assert flash(chip, FLASH_START, len(app)) == app


def test_clone_silicon_is_named_in_a_warning(chip: Path) -> None:
    faults.inject(str(chip), "clone")
    result = f4load("info")
    assert result.exit_code == 0
    assert "not by ST" in result.stdout and "clone" in result.stdout


def test_console_script_runs_as_a_program(chip: Path, tmp_path: Path) -> None:
    app = data(1000, seed=21)
    done = subprocess.run([sys.executable, "-c", "import sys; from f4load.cli import main; sys.exit(main())",
                           str(write(tmp_path / "app.bin", app)), "-q"], capture_output=True, text=True,
                          timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert flash(chip, FLASH_START, len(app)) == app
    missing = subprocess.run([sys.executable, "-c", "import sys; from f4load.cli import main; sys.exit(main())",
                              str(tmp_path / "missing.bin")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == EXIT_USAGE and missing.stderr.count("\n") == 1
