"""The RAM stub's build: reproducible, position independent, within budget, and loadable by pyocd.

The stub is built once per session into a temporary directory (it takes about a second) and compared with the
artifact shipped inside the package.
"""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from pyocd.core.memory_map import RamRegion
from pyocd.target.pack.flash_algo import PackFlashAlgo

from f4load import part, protocol
from f4load.crc import stm32_crc32
from f4load.sim.chip import REGSEL_LR, REGSEL_PC, REGSEL_SP, REGSEL_XPSR, Chip
from f4load.sim.clock import PS_PER_MS
from f4load.sim.faults import Faults
from f4load.stub_image import CMSIS_ENTRY_POINTS, ENTRY_POINTS, StubImage, shipped_elf_bytes

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "toolchain"))
import build_stub  # noqa: E402  (toolchain/ is not a package)

PEER_FLM = Path(os.environ.get("F4LOAD_PEER_FLM", str(REPO / ".." / "shared" / "peers" / "STM32F4xx_2048.FLM")))


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> build_stub.BuildResult:
    return build_stub.build(tmp_path_factory.mktemp("stub"))


def _elf_symbols(data: bytes) -> dict:
    import io

    elf = ELFFile(io.BytesIO(data))
    return {s.name: s for s in elf.get_section_by_name(".symtab").iter_symbols() if s.name}


# --- reproducibility and the shipped artifact ---------------------------------------------------------------

def test_two_builds_in_different_directories_give_identical_bytes(built, tmp_path):
    again = build_stub.build(tmp_path / "elsewhere")
    assert again.artifact.read_bytes() == built.artifact.read_bytes()


def test_shipped_stub_is_the_fresh_build(built):
    assert shipped_elf_bytes() == built.artifact.read_bytes(), "run `invoke build-stub` and commit the result"


def test_shipped_protocol_header_is_the_stub_header():
    shipped = (REPO / "host" / "f4load" / "stub" / "f4load_protocol.h").read_bytes()
    assert shipped == (REPO / "stub" / "f4load_protocol.h").read_bytes(), "run `invoke build-stub`"


def test_build_prints_its_compiler_version(built):
    assert built.compiler.startswith("arm-none-eabi-gcc")


# --- position independence ----------------------------------------------------------------------------------

def test_linked_stub_has_no_got_and_only_pc_relative_relocations(built):
    linked = built.artifact.parent / "f4load_stub.linked.elf"
    with linked.open("rb") as f:
        elf = ELFFile(f)
        kinds = set()
        for section in elf.iter_sections():
            if isinstance(section, RelocationSection):
                kinds |= {build_stub._relocation_name(r["r_info_type"]) for r in section.iter_relocations()}
        got = elf.get_section_by_name(".got")
        assert got is None or got.data_size == 0
        assert elf.get_section_by_name(".dynamic") is None
    assert kinds and kinds <= build_stub.PC_RELATIVE_RELOCATIONS


def test_shipped_stub_is_a_plain_executable_without_relocations():
    import io

    elf = ELFFile(io.BytesIO(shipped_elf_bytes()))
    assert elf["e_type"] == "ET_EXEC"
    assert not [s.name for s in elf.iter_sections() if isinstance(s, RelocationSection)]
    assert [s.name for s in elf.iter_sections() if s["sh_flags"] & 0x2] == ["PrgCode", "PrgData", "DevDscr"]


def test_a_table_of_pointers_is_rejected_as_an_absolute_address(tmp_path):
    source = tmp_path / "bad.c"
    source.write_text("static int a, b;\n"
                      "static int *const table[2] = {&a, &b};\n"
                      "__attribute__((visibility(\"default\"))) int Init(unsigned i) { return *table[i & 1]; }\n")
    obj, elf = tmp_path / "bad.o", tmp_path / "bad.elf"
    subprocess.run([build_stub.CC, *build_stub.CFLAGS, "-c", str(source), "-o", str(obj)], check=True, cwd=tmp_path)
    subprocess.run([build_stub.CC, *build_stub.LDFLAGS, "-T", str(build_stub.LINKER_SCRIPT), "-o", str(elf),
                    str(obj)], check=True, cwd=tmp_path)
    with pytest.raises(build_stub.BuildError, match="R_ARM_ABS32"):
        build_stub.check_position_independent(elf)


# --- budget and descriptor ----------------------------------------------------------------------------------

def test_image_fits_its_budget(built):
    assert len(built.image.image) <= protocol.const("F4LOAD_IMAGE_BUDGET")
    assert built.image.code_size + built.image.data_size == len(built.image.image)


def test_stack_need_comes_from_the_call_graph_and_fits_its_budget(built):
    assert built.stack_path[0] in ENTRY_POINTS
    assert 0 < built.stack_need <= protocol.const("F4LOAD_STACK_BUDGET")
    assert built.image.stack_need == built.stack_need  # carried in the ELF as f4load_stack_need


def test_recursion_fails_the_stack_analysis(tmp_path):
    ci = tmp_path / "r.ci"
    ci.write_text('graph: { title: "r.c"\n'
                  'node: { title: "Init" label: "Init\\nr.c:1:1\\n8 bytes (static)" }\n'
                  'node: { title: "f" label: "f\\nr.c:2:1\\n8 bytes (static)" }\n'
                  'edge: { sourcename: "Init" targetname: "f" label: "r.c:1:9" }\n'
                  'edge: { sourcename: "f" targetname: "Init" label: "r.c:2:9" }\n}\n')
    with pytest.raises(build_stub.BuildError, match="recursion"):
        build_stub.stack_need([ci], ["Init"])


def test_descriptor_offsets_are_the_elf_symbols(built):
    symbols = _elf_symbols(built.artifact.read_bytes())
    image = built.image
    for name, offset in image.entry.as_dict().items():
        assert symbols[name]["st_value"] == offset | 1, name  # Thumb functions
        assert symbols[name]["st_info"]["type"] == "STT_FUNC"
    assert image.config_offset == symbols["f4load_config"]["st_value"]
    assert image.error_offset == symbols["f4load_error"]["st_value"]
    assert image.crc_offset == symbols["f4load_crc"]["st_value"]
    assert symbols["f4load_error"]["st_size"] == protocol.ffi.sizeof("struct f4load_error")
    for offset in (image.config_offset, image.error_offset, image.crc_offset):
        assert image.static_base <= offset < len(image.image)  # in PrgData, which is loaded
    assert image.static_base + image.data_size == len(image.image)


def test_config_word_starts_at_the_x32_default(built):
    image = built.image
    word = struct.unpack_from("<I", image.image, image.config_offset)[0]
    assert word == protocol.const("F4LOAD_CONFIG_DEFAULT") == protocol.config_word()


def test_ram_layout_keeps_image_stack_queue_and_buffers_apart(built):
    layout = built.image.layout()
    assert layout.halt_address == protocol.const("F4LOAD_RAM_BASE")
    assert layout.load_address + len(built.image.image) <= layout.stack_top - built.image.stack_need
    assert layout.stack_top <= layout.queue_address
    assert layout.queue_address + protocol.ffi.sizeof("struct f4load_queue") <= layout.buffers[0]
    end = layout.buffers[-1] + protocol.const("F4LOAD_BUFFER_SIZE")
    assert end <= protocol.const("F4LOAD_RAM_BASE") + protocol.const("F4LOAD_RAM_SIZE")


# --- the FLM as pyocd sees it -------------------------------------------------------------------------------

def test_pyocd_loads_the_flm_with_all_entry_points(built):
    algo = PackFlashAlgo(str(built.artifact))
    symbols = {k: v & ~1 for k, v in algo.symbols.items()}
    assert symbols == {k: v for k, v in built.image.entry.as_dict().items() if k in CMSIS_ENTRY_POINTS}
    assert algo.rw_start == built.image.static_base
    assert bytes(algo.algo_data[:len(built.image.image)]) == built.image.image


def test_pyocd_sees_the_f4_sector_map_of_a_1mb_device(built):
    algo = PackFlashAlgo(str(built.artifact))
    assert (algo.flash_start, algo.flash_size, algo.page_size) == (0x0800_0000, 0x10_0000, 0x4000)
    pyocd_sectors = [(r.start, r.end + 1 - r.start, size) for r, size in algo.iter_sector_size_ranges()]
    expected = {(s.start, s.size) for s in part.sectors_for(1024 * part.KB)}
    seen = {(start + i * size, size) for start, length, size in pyocd_sectors for i in range(length // size)}
    assert seen == expected


def test_pyocd_places_the_flm_in_ram_with_its_static_base(built):
    algo = PackFlashAlgo(str(built.artifact))
    placed = algo.get_pyocd_flash_algo(algo.page_size, RamRegion(start=0x2000_0000, length=0x2_0000))
    code_start = placed["load_address"] + 4  # after pyocd's BKPT header
    assert placed["static_base"] == code_start + built.image.static_base
    assert placed["pc_erase_sector"] == code_start + built.image.entry.EraseSector + 1


def test_sector_map_agrees_with_the_keil_peer_in_the_first_megabyte(built):
    if not PEER_FLM.exists():
        pytest.skip(f"peer FLM absent: {PEER_FLM} (set F4LOAD_PEER_FLM)")
    ours, peer = PackFlashAlgo(str(built.artifact)), PackFlashAlgo(str(PEER_FLM))
    assert ours.flash_start == peer.flash_start
    assert [s for s in peer.sector_sizes if s[0] < ours.flash_size] == ours.sector_sizes


# --- the blob runs wherever it is loaded ---------------------------------------------------------------------

def _run_stub_at(image: StubImage, load: int, flash: bytes) -> dict:
    """Load the blob at `load` on a virtual STM32F407VE (halted, debugger attached) and call a few entry
    points the way a debugger does: arguments in r0-r2, SP, LR at a BKPT word, PC at the entry point."""
    chip = Chip(Faults(flash_kb=512))
    chip.power_on()
    chip.debugen = True
    chip.halt(0)
    chip.load(0x0800_0000, flash)
    halt = 0x2001_F000
    chip.bus_write_block(halt, struct.pack("<I", protocol.const("F4LOAD_HALT_WORD")))
    chip.bus_write_block(load, image.image)

    def call(name: str, *args: int) -> int:
        for regsel, value in enumerate(args):
            chip.write_core_register(regsel, value)
        chip.write_core_register(REGSEL_SP, 0x2001_E000)
        chip.write_core_register(REGSEL_LR, halt | 1)
        chip.write_core_register(REGSEL_XPSR, 1 << 24)
        chip.write_core_register(REGSEL_PC, image.entry_address(load, name))
        chip.resume()
        for _ in range(100):
            if chip.halted:
                break
            chip.advance(10 * PS_PER_MS)
        assert chip.halted and chip.read_core_register(REGSEL_PC) == halt, f"{name} did not return"
        return chip.read_core_register(0)

    def record() -> protocol.ErrorRecord:
        size = protocol.ErrorRecord.SIZE
        return protocol.ErrorRecord.from_bytes(chip.bus_read_block(load + image.error_offset, size))

    early = call("EraseSector", 0x0800_0000)
    early_record = record()
    init = call("Init", 0x0800_0000, 0, 2)
    crc = call("Crc", 0x0800_0000, 64)
    crc_value = struct.unpack("<I", chip.bus_read_block(load + image.crc_offset, 4))[0]
    beyond = call("EraseSector", 0x0808_0000)  # sector 8 does not exist on a 512 KB part
    return {"early": early, "early_record": early_record.result, "init": init, "crc": crc,
            "crc_value": crc_value, "beyond": beyond, "beyond_record": record().address,
            "flash_size": record().flash_size}


def test_the_blob_gives_the_same_results_at_two_load_addresses(built):
    flash = bytes(range(256)) * 2048
    at_low = _run_stub_at(built.image, 0x2000_0004, flash)
    at_high = _run_stub_at(built.image, 0x2000_9A0C, flash)
    assert at_low == at_high
    c = protocol.const
    not_init = (c("F4LOAD_KIND_NOT_INITIALIZED") << 24) | (c("F4LOAD_OP_ERASE_SECTOR") << 20) | (15 << 16)
    assert at_low["early"] == at_low["early_record"] == not_init
    assert at_low["init"] == 0
    assert at_low["crc"] == 0
    assert at_low["crc_value"] == stm32_crc32(flash[:64])
    beyond = protocol.ResultCode.decode(at_low["beyond"])
    assert (beyond.kind, beyond.op, beyond.sector) == (c("F4LOAD_KIND_BEYOND_END"), c("F4LOAD_OP_ERASE_SECTOR"), 8)
    assert at_low["beyond_record"] == 0x0808_0000
    assert at_low["flash_size"] == 512 * 1024
