"""Unmodified pyocd drives the virtual STM32F407 through the f4sim probe plugin.

The command-line scenarios run `pyocd` as a subprocess, exactly as a user would; each test has its own
virtual chip (state directory) from the `sim_state_dir` fixture.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from pyocd.core import exceptions
from pyocd.core.memory_map import MemoryType
from pyocd.flash.eraser import FlashEraser
from pyocd.flash.file_programmer import FileProgrammer
from pyocd.probe.aggregator import DebugProbeAggregator

from f4load import registers as reg
from f4load.part import CCM_START, FLASH_START, PARTS, SRAM_START
from f4load.pyocd_targets import F4LoadFlash
from f4load.sim import state as sim_state
from f4load.sim.clock import LINK_MODELS, PS_PER_S
from f4load.sim.probe import SimProbe

KB = 1024
VE = PARTS["stm32f407ve"]


def random_image(size: int, seed: int = 407) -> bytes:
    return random.Random(seed).randbytes(size)


def quiet(progress: float) -> None:
    """A FileProgrammer progress callback that prints nothing."""


def stored_flash(state_dir: Path) -> bytes:
    """The virtual flash as the state directory holds it (what the next process will see)."""
    return bytes(sim_state.load_state(state_dir).flash)


def assert_one_line_error(result, *needles: str) -> None:
    """pyocd failed with an error of one line that contains every needle, and printed no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if all(n in line for n in needles)]
    assert len(lines) == 1, output


# --- the probe as pyocd sees it ------------------------------------------------------------------------
def test_commander_reads_the_f407_idcode(run_pyocd):
    result = run_pyocd("commander", "-u", "f4sim", "-c", "read32 0xE0042000", link=None)  # default stlink-v2
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"e0042000:\s+([0-9a-f]{8})", result.stdout)
    assert match, result.stdout
    assert int(match.group(1), 16) & 0xFFF == reg.DEV_ID_F40X_41X


def test_probe_is_listed_only_when_asked_for_by_type(sim_state_dir):
    listed = [p.unique_id for p in DebugProbeAggregator.get_all_connected_probes()]
    assert "f4sim" not in listed
    assert [p.unique_id for p in DebugProbeAggregator.get_all_connected_probes("f4sim:")] == ["f4sim"]
    assert isinstance(DebugProbeAggregator.get_probe_with_id("f4sim"), SimProbe)


def test_probe_needs_no_target_option_and_picks_the_part_from_the_flash_size(open_session, monkeypatch):
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", "flash=1024")
    session = open_session()
    assert session.options.get("target_override") == "f4load_stm32f407xg"  # f4load.pyocd_targets' type
    flash = [r for r in session.target.memory_map if r.type is MemoryType.FLASH]
    assert (flash[0].start, flash[-1].end + 1) == (FLASH_START, PARTS["stm32f407vg"].flash_end)


def test_a_512k_chip_is_an_f4load_stm32f407xe(open_session):
    session = open_session()
    assert session.options.get("target_override") == "f4load_stm32f407xe"
    assert isinstance(session.target.memory_map.get_boot_memory().flash, F4LoadFlash)


def test_debug_port_identity(sim_session):
    probe = sim_session.probe
    assert probe.read_dp(0x0) == 0x2BA0_1477  # DP IDR
    assert probe.read_ap(0xFC) == 0x2477_0011  # AHB-AP IDR
    assert probe.read_ap(0xF8) == 0xE00F_F003  # AHB-AP BASE: ROM table present
    assert [probe.read_ap((apsel << 24) | 0xFC) for apsel in (1, 2, 3)] == [0, 0, 0]


def test_memory_map_puts_algorithms_in_sram_not_ccm(sim_session):
    memory_map = sim_session.target.memory_map
    assert memory_map.get_default_region_of_type(MemoryType.RAM).start == SRAM_START
    ccm = memory_map.get_region_for_address(CCM_START)
    assert ccm is not None and not ccm.is_default
    flash = memory_map.get_boot_memory()
    sectors = [(r.start, r.sector_size) for r in flash.submap]
    assert sectors == [(0x0800_0000, 16 * KB), (0x0801_0000, 64 * KB), (0x0802_0000, 128 * KB)]


def test_memory_transfers_of_every_width(sim_session):
    target = sim_session.target
    target.write32(SRAM_START, 0x1122_3344)
    target.write16(SRAM_START + 4, 0x5566)
    target.write8(SRAM_START + 6, 0x77)
    assert target.read32(SRAM_START) == 0x1122_3344
    assert target.read16(SRAM_START + 4) == 0x5566
    assert target.read8(SRAM_START + 6) == 0x77
    data = list(random_image(1001))
    target.write_memory_block8(SRAM_START + 0x101, data)  # unaligned start and length
    assert target.read_memory_block8(SRAM_START + 0x101, len(data)) == data
    words = [0xDEAD_BEEF, 0x0BAD_F00D, 0x1234_5678]
    target.write_memory_block32(CCM_START, words)
    assert target.read_memory_block32(CCM_START, 3) == words


def test_bus_fault_is_a_pyocd_transfer_fault(sim_session):
    reserved = 0x3000_0000  # RM0090 Figure 15: nothing is mapped between SRAM-bitband and peripherals here
    with pytest.raises(exceptions.TransferFaultError) as fault:
        sim_session.target.read32(reserved)
    assert fault.value.fault_address == reserved


def test_reset_pin_resets_the_chip(sim_session):
    probe = sim_session.probe
    sim_session.target.write32(reg.RCC_CSR, reg.RCC_CSR_RMVF)  # clear the reset flags
    probe.assert_reset(True)
    assert probe.is_reset_asserted() and probe.chip.nrst_asserted
    probe.assert_reset(False)
    assert not probe.chip.nrst_asserted
    assert sim_session.target.read32(reg.RCC_CSR) & reg.RCC_CSR_PINRSTF


def test_probe_reset_holds_nrst_for_the_hold_time_in_virtual_time(open_session):
    session = open_session(**{"reset.hold_time": 0.01, "reset.post_delay": 0.002})
    probe = session.probe
    session.target.write32(reg.RCC_CSR, reg.RCC_CSR_RMVF)
    before = probe.clock.now_ps
    probe.reset()
    assert probe.clock.now_ps - before >= (10 + 2) * PS_PER_S // 1000
    assert not probe.is_reset_asserted()
    assert probe.chip.resets.get("pin") == 1


# --- programming with pyocd's own code and algorithm ---------------------------------------------------
def test_pyocd_flash_leaves_the_image_in_flash_and_a_second_process_reads_it_back(run_pyocd, sim_state_dir,
                                                                                  tmp_path):
    image = random_image(40 * KB + 123)  # sectors 0-2, ragged end
    (tmp_path / "app.bin").write_bytes(image)
    result = run_pyocd("flash", "-u", "f4sim", str(tmp_path / "app.bin"))
    assert result.returncode == 0, result.stdout + result.stderr
    flash = stored_flash(sim_state_dir)
    assert flash[:len(image)] == image
    assert flash[len(image):3 * 16 * KB] == b"\xff" * (3 * 16 * KB - len(image))  # rest of erased sectors

    out = tmp_path / "readback.bin"
    result = run_pyocd("commander", "-u", "f4sim", "-c", f"savemem 0x{FLASH_START:08x} {len(image)} {out}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_bytes() == image


def test_file_programmer_in_process(open_session, sim_state_dir, tmp_path):
    image = random_image(20 * KB, seed=1)
    (tmp_path / "app.bin").write_bytes(image)
    session = open_session()
    FileProgrammer(session, progress=quiet).program(str(tmp_path / "app.bin"), base_address=FLASH_START + 16 * KB)
    assert bytes(session.target.read_memory_block8(FLASH_START + 16 * KB, len(image))) == image
    session.close()
    assert stored_flash(sim_state_dir)[16 * KB:16 * KB + len(image)] == image


def test_pyocd_erase_sector_erases_that_sector_only(run_pyocd, open_session, sim_state_dir, tmp_path):
    image = random_image(48 * KB, seed=2)  # sectors 0, 1, 2
    (tmp_path / "app.bin").write_bytes(image)
    session = open_session()
    FileProgrammer(session, progress=quiet).program(str(tmp_path / "app.bin"), base_address=FLASH_START)
    session.close()

    result = run_pyocd("erase", "-u", "f4sim", "--sector", "0x08004000")
    assert result.returncode == 0, result.stdout + result.stderr
    flash = stored_flash(sim_state_dir)
    assert flash[:16 * KB] == image[:16 * KB]
    assert flash[16 * KB:32 * KB] == b"\xff" * (16 * KB)
    assert flash[32 * KB:48 * KB] == image[32 * KB:]


def test_flash_eraser_in_process(sim_session, sim_state_dir):
    target = sim_session.target
    FlashEraser(sim_session, FlashEraser.Mode.SECTOR).erase(["0x08000000"])
    assert bytes(target.read_memory_block8(FLASH_START, 16)) == b"\xff" * 16


def test_pyocd_flash_uses_f4loads_stub_and_names_the_write_protected_sector(run_pyocd, sim_state_dir, tmp_path):
    (tmp_path / "app.bin").write_bytes(random_image(40 * KB, seed=5))  # sectors 0-2
    result = run_pyocd("flash", "-u", "f4sim", str(tmp_path / "app.bin"), faults="wrp=1")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    # The stub's decoded error, not pyocd's "flash erase sector failure" with a bare result code.
    assert "EraseSector failed on sector 1 (0x08004000, 16 KB)" in output, output
    assert "FLASH_SR.WRPERR" in output, output


def test_pyocd_programs_with_the_keil_peer_flm(open_session, peer_flm, sim_state_dir, tmp_path):
    image = random_image(70 * KB, seed=4)  # sectors 0-4
    (tmp_path / "app.bin").write_bytes(image)
    session = open_session(**{"f4sim.flm": str(peer_flm)})
    flash = session.target.memory_map.get_boot_memory()
    assert flash.flm == str(peer_flm) and not isinstance(flash.flash, F4LoadFlash)
    FileProgrammer(session, progress=quiet).program(str(tmp_path / "app.bin"), base_address=FLASH_START)
    session.close()
    assert stored_flash(sim_state_dir)[:len(image)] == image


# --- link accounting ------------------------------------------------------------------------------------
def program_and_measure(open_session, link: str, image_path: Path):
    session = open_session(link)
    probe = session.probe
    start_ps, start_commands = probe.clock.now_ps, probe.commands
    FileProgrammer(session, progress=quiet).program(str(image_path), base_address=FLASH_START)
    elapsed_ps, commands = probe.clock.now_ps - start_ps, probe.commands - start_commands
    written = probe.bytes_written
    session.close()
    return elapsed_ps, commands, written


def test_link_cost_of_programming_an_image(open_session, sim_state_dir, tmp_path):
    image = tmp_path / "app.bin"
    image.write_bytes(random_image(32 * KB, seed=3))
    results = {}
    for link in ("ideal", "stlink-v2"):
        sim_state.reset_state(sim_state_dir)  # the same job from the same erased chip
        results[link] = program_and_measure(open_session, link, image)
        elapsed_ps, commands, written = results[link]
        print(f"pyocd FileProgrammer, 32 KB, link {link}: {elapsed_ps / PS_PER_S:.3f} s virtual, "
              f"{commands} probe commands, {written} bytes written")
    v2_ps, v2_commands, v2_written = results["stlink-v2"]
    assert v2_written >= 32 * KB
    # Every stlink-v2 command costs at least its fixed turnaround; the ideal link costs nothing extra.
    assert v2_ps >= v2_commands * LINK_MODELS["stlink-v2"].command_overhead_ps
    assert v2_ps > results["ideal"][0]


def test_link_model_from_the_environment(open_session, monkeypatch):
    monkeypatch.setenv("F4LOAD_SIM_LINK", "stlink-v3")
    session = open_session(link="")
    assert session.probe.link.name == "stlink-v3"


def test_link_is_lost_after_the_injected_number_of_commands(open_session, monkeypatch):
    probe = open_session().probe
    probe.close()  # reopen the chip with the fault in force; the count starts when the probe opens
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", "disconnect=5")
    probe.open()
    probe.connect()
    for _ in range(4):
        probe.read_dp(0x0)
    assert probe.commands == 5
    with pytest.raises(exceptions.ProbeDisconnected):
        probe.read_dp(0x0)
    with pytest.raises(exceptions.ProbeDisconnected):
        probe.read_dp(0x0)


def test_target_voltage_is_the_supply_voltage(open_session, monkeypatch):
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", "vdd=2.5")
    assert open_session().probe.target_voltage == pytest.approx(2.5)


# --- bad input reaches the user as one line -------------------------------------------------------------
def test_corrupt_state_file_is_a_one_line_error(run_pyocd, sim_state_dir):
    sim_state.reset_state(sim_state_dir)
    (sim_state_dir / sim_state.STATE_FILE).write_text('{"format": 1, "unique_id": ')
    result = run_pyocd("commander", "-u", "f4sim", "-c", "read32 0x08000000")
    assert_one_line_error(result, "state.json", "truncated")
    result = run_pyocd("erase", "-u", "f4sim", "--chip")
    assert_one_line_error(result, "state.json", "truncated")


def test_unknown_fault_name_is_a_one_line_error(run_pyocd):
    result = run_pyocd("commander", "-u", "f4sim", "-c", "read32 0x08000000", faults="warp-drive")
    assert_one_line_error(result, "unknown fault 'warp-drive'")


def test_unknown_link_model_is_a_one_line_error(run_pyocd):
    result = run_pyocd("commander", "-u", "f4sim", "-c", "read32 0x08000000", link="carrier-pigeon")
    assert_one_line_error(result, "unknown f4sim link model 'carrier-pigeon'")


def test_unusable_flm_is_a_one_line_error(run_pyocd, tmp_path):
    result = run_pyocd("erase", "-u", "f4sim", "--chip", "-O", f"f4sim.flm={tmp_path / 'missing.FLM'}")
    assert_one_line_error(result, "f4sim.flm: cannot use", "missing.FLM")


def test_a_chip_in_use_by_another_process_is_a_one_line_error(open_session, run_pyocd):
    open_session()
    result = run_pyocd("commander", "-u", "f4sim", "-c", "read32 0x08000000")
    assert_one_line_error(result, "in use by pid")


def test_named_virtual_boards_are_separate_chips_to_pyocd(run_pyocd, sim_state_dir) -> None:
    """`-u f4sim:NAME` reaches the board NAME: its own unique ID, its own flash."""
    ids = []
    for uid in ("f4sim:a", "f4sim:b", "f4sim"):
        result = run_pyocd("commander", "-u", uid, "-c", "read32 0x1FFF7A10 12")
        assert result.returncode == 0, result.stderr
        ids.append(result.stdout.split()[1:4])
    assert len({tuple(i) for i in ids}) == 3
    assert (sim_state_dir / "boards" / "a" / "flash.bin").is_file()
