"""f4load's stub as pyocd's flash algorithm, on the virtual STM32F407 (f4load.pyocd_targets, docs/pyocd.md).

Everything here runs pyocd's own flash code - FileProgrammer, FlashBuilder, Flash - with our algorithm on
the virtual chip; nothing is mocked. Spies only record calls and pass them on.
"""
from __future__ import annotations

import io
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, List, Tuple

import pytest
from pyocd.core.memory_map import FlashRegion, MemoryMap, MemoryType, RamRegion
from pyocd.coresight.coresight_target import CoreSightTarget
from pyocd.flash.file_programmer import FileProgrammer
from pyocd.flash.flash import Flash
from pyocd.target import TARGET
from pyocd.target.pack.flash_algo import PackFlashAlgo

from f4load import protocol
from f4load.part import CCM_SIZE, CCM_START, FLASH_START, KB, SRAM_SIZE, SRAM_START, sectors_for
from f4load.pyocd_targets import (
    BLOB_HEADER_SIZE,
    PAGE_SIZE,
    TARGETS,
    F4LoadFlash,
    probe_supply_voltage,
    register_targets,
    stub_flash_algo,
    stub_image,
)
from f4load.sim import state as sim_state
from f4load.stub_image import ARTIFACT_NAME

# No link cost: these tests are about function; docs/pyocd.md and `invoke bench-algo` are about time.
LINK = "ideal"
REPO = Path(__file__).resolve().parent.parent
FLM_PATH = REPO / "host" / "f4load" / "stub" / ARTIFACT_NAME


@pytest.fixture(autouse=True)
def f4load_targets() -> None:
    register_targets()


def image(size: int, seed: int = 407) -> bytes:
    return random.Random(seed).randbytes(size)


def quiet(progress: float) -> None:
    """A FileProgrammer progress callback that prints nothing."""


def program(session: Any, data: bytes, address: int = FLASH_START, **options: Any) -> None:
    """What `pyocd flash` does with a .bin: FileProgrammer -> FlashLoader -> FlashBuilder -> Flash."""
    FileProgrammer(session, progress=quiet, **options).program(io.BytesIO(data), base_address=address,
                                                               file_format="bin")


def read_flash(session: Any, address: int, length: int) -> bytes:
    return bytes(session.target.read_memory_block8(address, length))


def main_flash(session: Any) -> F4LoadFlash:
    flash = session.target.memory_map.get_boot_memory().flash
    assert isinstance(flash, F4LoadFlash)
    return flash


# --- the algorithm and the target types --------------------------------------------------------------------
def test_algo_from_the_flm_has_two_page_buffers_below_the_stub_in_sram():
    algo = stub_flash_algo()
    stub = stub_image()
    load, buffers = algo["load_address"], algo["page_buffers"]
    assert len(buffers) == 2
    # [stack][buffer 2][buffer 1][BKPT + stub] up to the end of SRAM, nothing overlapping.
    assert SRAM_START <= algo["end_stack"] < algo["begin_stack"] <= buffers[1]
    assert buffers[1] + PAGE_SIZE <= buffers[0] and buffers[0] + PAGE_SIZE <= load
    assert load + 4 * len(algo["instructions"]) <= SRAM_START + SRAM_SIZE
    assert algo["begin_stack"] - algo["end_stack"] >= stub.stack_need
    blob = load + BLOB_HEADER_SIZE
    assert algo["pc_init"] == blob + stub.entry.Init + 1
    assert algo["pc_program_page"] == blob + stub.entry.ProgramPage + 1
    assert algo["pc_erase_sector"] == blob + stub.entry.EraseSector + 1
    assert algo["pc_eraseAll"] == blob + stub.entry.EraseChip + 1


def test_target_types_for_every_part_and_size_are_registered_without_clashing_with_pyocds():
    expected = {f"f4load_stm32f4{p}x{s}" for p in ("05", "07", "15", "17") for s in ("e", "g")}
    assert set(TARGETS) == expected
    for name in expected:
        assert TARGET[name] is TARGETS[name]
    assert {TARGETS[n].FLASH_SIZE for n in expected if n.endswith("xe")} == {512 * KB}
    assert {TARGETS[n].FLASH_SIZE for n in expected if n.endswith("xg")} == {1024 * KB}


@pytest.mark.parametrize("flash_kb, target", [(512, "f4load_stm32f407xe"), (1024, "f4load_stm32f417xg")])
def test_memory_map_has_the_f4_sector_map_sram_default_and_ccm_not_default(open_session, monkeypatch,
                                                                             flash_kb, target):
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", f"flash={flash_kb}")
    session = open_session(LINK, target_override=target)
    memory_map = session.target.memory_map
    flash_regions = list(memory_map.iter_matching_regions(type=MemoryType.FLASH))
    assert len(flash_regions) == 1
    flash = flash_regions[0].flash
    assert isinstance(flash, F4LoadFlash)
    seen = [flash.get_sector_info(s.start) for s in sectors_for(flash_kb * KB)]
    assert [(i.base_addr, i.size) for i in seen] == [(s.start, s.size) for s in sectors_for(flash_kb * KB)]
    assert flash_regions[0].end + 1 == FLASH_START + flash_kb * KB
    sram = memory_map.get_default_region_of_type(MemoryType.RAM)
    assert (sram.start, sram.length) == (SRAM_START, SRAM_SIZE)
    ccm = memory_map.get_region_for_address(CCM_START)
    assert (ccm.length, ccm.is_default, ccm.is_executable) == (CCM_SIZE, False, False)


# --- programming through pyocd -----------------------------------------------------------------------------
def test_a_512k_image_programs_and_reads_back_exactly(open_session):
    session = open_session(LINK, target_override="f4load_stm32f407xe")
    data = image(512 * KB)
    program(session, data)
    assert read_flash(session, FLASH_START, len(data)) == data


def test_a_1m_image_programs_and_reads_back_exactly(open_session, monkeypatch, sim_state_dir):
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", "flash=1024")
    session = open_session(LINK, target_override="f4load_stm32f407xg")
    data = image(1024 * KB, seed=1024)
    program(session, data)
    assert read_flash(session, FLASH_START, len(data)) == data
    session.close()
    assert bytes(sim_state.load_state(sim_state_dir).flash) == data  # and it is in the chip's flash


def test_a_partial_page_at_an_unaligned_start_changes_only_those_bytes(open_session):
    session = open_session(LINK, target_override="f4load_stm32f407xe")
    old = image(64 * KB, seed=1)
    program(session, old)
    patch = image(5001, seed=2)
    start = FLASH_START + 0x4003  # sector 1, odd address, ends mid-page
    # pyocd 0.46 erases the rest of a touched sector unless keep_unwritten is set (its default is False).
    program(session, patch, start, keep_unwritten=True)
    expected = bytearray(old)
    expected[0x4003:0x4003 + len(patch)] = patch
    assert read_flash(session, FLASH_START, len(old)) == bytes(expected)


def test_a_few_bytes_into_an_erased_chip_leave_the_rest_erased(open_session):
    session = open_session(LINK, target_override="f4load_stm32f407xe")
    program(session, b"\x01\x02\x03", FLASH_START + 0x20001)
    assert read_flash(session, FLASH_START + 0x20000, 8) == b"\xff\x01\x02\x03\xff\xff\xff\xff"


def test_pyocd_double_buffers_with_our_algorithm(open_session, monkeypatch):
    session = open_session(LINK, target_override="f4load_stm32f407xe")
    flash = main_flash(session)
    chip = session.probe.chip
    starts: List[Tuple[int, int]] = []
    buffers_passed: List[int] = []
    core_running_while_loading: List[bool] = []
    single_buffered: List[int] = []

    def spy(name: str, record: Callable[..., None]) -> None:
        original = getattr(flash, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            record(*args, **kwargs)
            return original(*args, **kwargs)
        monkeypatch.setattr(flash, name, call)

    spy("start_program_page_with_buffer", lambda n, address: starts.append((n, address)))
    spy("load_page_buffer", lambda n, address, data: core_running_while_loading.append(not chip.halted))
    spy("program_page", lambda address, data: single_buffered.append(address))
    spy("_call_function", lambda pc, r0=None, r1=None, r2=None, r3=None, init=False:
        buffers_passed.append(r2) if pc == flash.flash_algo["pc_program_page"] else None)

    data = image(128 * KB)
    program(session, data)

    pages = len(data) // PAGE_SIZE
    assert starts == [(i % 2, FLASH_START + i * PAGE_SIZE) for i in range(pages)]
    assert buffers_passed == [flash.page_buffers[i % 2] for i in range(pages)]
    assert len(set(buffers_passed)) == 2
    # Every buffer after the first is filled while the core runs ProgramPage on the other one.
    assert core_running_while_loading == [False] + [True] * (pages - 1)
    assert single_buffered == []
    assert read_flash(session, FLASH_START, len(data)) == data


def test_the_flm_loaded_by_pyocds_packflashalgo_programs_as_a_plain_cmsis_algorithm(open_session):
    """pyocd's own FLM route: a region with `flm=`, pyocd's Flash class, no f4load code in the loop."""

    class PlainFlmTarget(CoreSightTarget):
        def __init__(self, session: Any) -> None:
            super().__init__(session, MemoryMap(
                FlashRegion(start=FLASH_START, length=512 * KB, flm=PackFlashAlgo(str(FLM_PATH)),
                            is_boot_memory=True),
                RamRegion(start=SRAM_START, length=SRAM_SIZE)))

    TARGET["f4load_test_plain_flm"] = PlainFlmTarget
    session = open_session(LINK, target_override="f4load_test_plain_flm")
    region = session.target.memory_map.get_boot_memory()
    assert type(region.flash) is Flash
    assert len(region.flash.page_buffers) == 2
    data = image(80 * KB + 123, seed=3)
    program(session, data)
    assert read_flash(session, FLASH_START, len(data)) == data


# --- the config word ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("vdd, psize", [(3.3, protocol.PSIZE_X32), (2.5, protocol.PSIZE_X16),
                                        (2.0, protocol.PSIZE_X8)])
def test_parallelism_follows_the_supply_voltage_the_probe_reports(open_session, monkeypatch, vdd, psize):
    monkeypatch.setenv("F4LOAD_SIM_FAULTS", f"vdd={vdd}")
    session = open_session(LINK, target_override="f4load_stm32f407xe")
    flash = main_flash(session)
    data = image(20 * KB, seed=4)
    program(session, data)
    assert flash.config_word == protocol.config_word(psize)
    assert read_flash(session, FLASH_START, len(data)) == data
    # The word the stub read is in target RAM, where pyocd loaded the blob.
    assert session.target.read32(flash.config_address) == protocol.config_word(psize)


class _Holder:
    """Something with a `target_voltage` attribute, as pyocd's STLink object has."""

    def __init__(self, volts: Any) -> None:
        self.target_voltage = volts


class _StlinkShapedProbe:
    """pyocd's StlinkProbe keeps the reading on its STLink object: probe._link.target_voltage."""

    def __init__(self, volts: Any) -> None:
        self._link = _Holder(volts)


def test_supply_voltage_is_read_where_pyocds_stlink_keeps_it():
    assert probe_supply_voltage(_StlinkShapedProbe(2.4)) == 2.4
    assert probe_supply_voltage(_Holder(3.1)) == 3.1
    assert probe_supply_voltage(_StlinkShapedProbe(None)) is None  # ST-Link could not measure
    assert probe_supply_voltage(object()) is None  # CMSIS-DAP: no reading


def test_no_voltage_reading_means_x32(open_session, monkeypatch):
    session = open_session(LINK, target_override="f4load_stm32f407xe")
    flash = main_flash(session)
    monkeypatch.setattr(type(session.probe), "target_voltage", property(lambda self: None))
    assert flash.choose_config_word() == protocol.config_word(protocol.PSIZE_X32)



# --- the benchmark task -------------------------------------------------------------------------------------
def test_bench_algo_task_reports_size_time_and_commands(sim_state_dir):
    """`invoke bench-algo` on a small image (the real run, 512 KB under stlink-v2, is docs/pyocd.md's)."""
    result = subprocess.run([sys.executable, "-m", "invoke", "bench-algo", "--size-kb", "16"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"f4load stub: {stub_image().code_size} bytes of code" in output
    assert re.search(r"pyocd \+ f4load stub +\d+\.\d+ s virtual +\d+ probe commands  read back OK", output)
    assert re.search(r"pyocd \+ Keil STM32F4xx_2048 *(\d+\.\d+ s virtual .* read back OK|: peer absent)", output)
