"""The RAM stub's build: reproducible, position independent, within budget, and loadable by pyocd.

The stub is built once per session into a temporary directory (it takes about a second) and compared with the
artifact shipped inside the package: byte for byte with the compiler recorded in f4load_stub.json; with another
compiler (another GCC generates other code) the fresh build must pass the stub's functional tests instead, and
the run says, as a warning in pytest's summary, which compiler gives byte identity.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import Dict, Iterator, Sequence

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from pyocd.core.memory_map import RamRegion
from pyocd.target.pack.flash_algo import PackFlashAlgo

import f4load
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

# The tests that run the stub itself: alone on the virtual chip, under f4load's streaming host, under pyocd.
FUNCTIONAL_TESTS = ("tests/test_stub_silicon_rules.py", "tests/test_stream.py", "tests/test_program_random.py",
                    "tests/test_pyocd_algo.py", "tests/test_pyocd_faults.py")


class StubCompilerNotice(UserWarning):
    """This machine's compiler is not the one that built the shipped stub: checked by function, not by bytes."""


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> build_stub.BuildResult:
    return build_stub.build(tmp_path_factory.mktemp("stub"))


@pytest.fixture(scope="session")
def other_code(tmp_path_factory: pytest.TempPathFactory) -> Iterator[build_stub.BuildResult]:
    """A stub whose code differs from the shipped one's, from the same sources: what another GCC version makes.
    No other compiler is installed here, so this compiler stands in for one, told not to inline (-fno-inline):
    other instructions, other offsets, a deeper stack, the same behaviour."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build_stub, "CFLAGS", [*build_stub.CFLAGS, "-fno-inline"])
        yield build_stub.build(tmp_path_factory.mktemp("other-code"))


def _environment_with_stub(stub: build_stub.BuildResult, work: Path) -> Dict[str, str]:
    """Environment in which `import f4load` gives a copy of the package carrying `stub` as its shipped stub (the
    copy first on PYTHONPATH; the checkout and the installed package stay as they are)."""
    package = work / "overlay" / "f4load"
    shutil.copytree(Path(f4load.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    build_stub.install(stub, package / "stub")
    path = [str(package.parent), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}


def _pytest_with_stub(stub: build_stub.BuildResult, tests: Sequence[str], work: Path) -> subprocess.CompletedProcess:
    """Run `tests` (paths from the repository's top) in a pytest subprocess on `stub` instead of the shipped one."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=REPO,
                          env=_environment_with_stub(stub, work), capture_output=True, text=True, timeout=900)


def _elf_symbols(data: bytes) -> dict:
    import io

    elf = ELFFile(io.BytesIO(data))
    return {s.name: s for s in elf.get_section_by_name(".symtab").iter_symbols() if s.name}


# --- reproducibility and the shipped artifact ---------------------------------------------------------------

def test_two_builds_in_different_directories_give_identical_bytes(built, tmp_path):
    again = build_stub.build(tmp_path / "elsewhere")
    assert again.artifact.read_bytes() == built.artifact.read_bytes()


def test_shipped_stub_is_the_fresh_build_or_passes_as_another_compilers(built, tmp_path):
    comparison = build_stub.compare_with_shipped(built)
    assert not comparison.stale, comparison.describe()
    if not comparison.other_compiler:
        assert shipped_elf_bytes() == built.artifact.read_bytes()
        return
    run = _pytest_with_stub(built, FUNCTIONAL_TESTS, tmp_path)
    assert run.returncode == 0, f"the stub built by {built.compiler} fails the stub's tests:\n{run.stdout[-6000:]}"
    warnings.warn(StubCompilerNotice(comparison.describe()), stacklevel=1)


def test_shipped_record_says_which_compiler_built_the_shipped_stub(built):
    record = json.loads(resources.files("f4load.stub").joinpath(build_stub.RECORD_NAME).read_text())
    assert record["sha256"] == hashlib.sha256(shipped_elf_bytes()).hexdigest()
    assert record["compiler"].startswith("arm-none-eabi-gcc")
    assert (record["cflags"], record["ldflags"]) == (list(built.cflags), list(built.ldflags))
    assert record["sources_sha256"] == build_stub.sources_digest() == built.sources_sha256


def test_stub_of_another_compiler_is_held_to_function_not_to_bytes(built, other_code, tmp_path):
    """The shipped stub as another compiler made it: its FLM, its record naming that compiler."""
    shipped = tmp_path / "shipped"
    shutil.copytree(build_stub.PACKAGE_STUB_DIR, shipped, ignore=shutil.ignore_patterns("__pycache__"))
    record = {**build_stub.read_record(shipped), "compiler": "arm-none-eabi-gcc (Arm GNU Toolchain 14.2.Rel1) 14.2.1",
              "sha256": hashlib.sha256(other_code.artifact.read_bytes()).hexdigest()}
    shutil.copyfile(other_code.artifact, shipped / build_stub.ARTIFACT_NAME)
    (shipped / build_stub.RECORD_NAME).write_text(json.dumps(record))

    comparison = build_stub.compare_with_shipped(built, shipped)
    assert comparison.other_compiler and not comparison.identical and not comparison.stale
    assert "built by `arm-none-eabi-gcc (Arm GNU Toolchain 14.2.Rel1) 14.2.1`" in comparison.describe()
    assert f"this machine has `{built.compiler}`" in comparison.describe()


def test_other_bytes_from_the_recorded_compiler_mean_a_stale_stub(built, other_code):
    shipped = other_code.artifact.read_bytes()
    record = {**built.record(), "sha256": hashlib.sha256(shipped).hexdigest()}
    comparison = build_stub.compare(shipped, record, built.artifact.read_bytes(), built.record())
    assert comparison.stale and not comparison.other_compiler
    assert "Run `invoke build-stub`" in comparison.describe()


def test_changed_sources_flags_or_record_mean_a_stale_stub_whatever_the_compiler(built):
    shipped = built.artifact.read_bytes()
    other = {**built.record(), "compiler": "arm-none-eabi-gcc (Ubuntu 13.2.rel1-2) 13.2.1 20231009"}
    changes = {"stub/ or toolchain/stub.ld changed": {"sources_sha256": "0" * 64},
               "cflags changed": {"cflags": other["cflags"][:-1]},
               "does not describe the shipped": {"sha256": "0" * 64}}
    for reason, change in changes.items():
        comparison = build_stub.compare(shipped, {**other, **change}, shipped, built.record())
        assert reason in " ".join(comparison.stale) and not comparison.other_compiler, reason


def test_the_functional_tests_run_on_the_stub_they_are_given(other_code, tmp_path):
    """What another compiler's build goes through, here for a stub with other code: the tests really load it."""
    env = _environment_with_stub(other_code, tmp_path / "probe")
    loaded = subprocess.run([sys.executable, "-c", "from f4load.stub_image import shipped_elf_bytes as b; "
                             "import hashlib; print(hashlib.sha256(b()).hexdigest())"],
                            env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == hashlib.sha256(other_code.artifact.read_bytes()).hexdigest() != \
        hashlib.sha256(shipped_elf_bytes()).hexdigest()
    run = _pytest_with_stub(other_code, FUNCTIONAL_TESTS[:1], tmp_path / "run")
    assert run.returncode == 0, run.stdout[-6000:]
    assert " passed" in run.stdout


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
