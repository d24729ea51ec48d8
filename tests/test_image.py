"""Reading firmware files into an Image: every format, and every way a file is refused before anything is erased.

Files are real: written by bincopy (HEX, S-records), by arm-none-eabi-gcc/ld (ELF) or by a small ELF32 writer
below (for headers a toolchain will not produce). A refusal is one line naming the file.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

import bincopy
import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import given, settings
from hypothesis import strategies as st

from f4load.image import F4LoadError, Image, ImageError, Piece, Segment, load_image, merge_pieces
from f4load.part import FLASH_START, PARTS

F407VE = PARTS["stm32f407ve"]
F407VG = PARTS["stm32f407vg"]


# --- writers ---------------------------------------------------------------------------------------------------

def binfile(*segments: Tuple[int, bytes], entry: Optional[int] = None) -> bincopy.BinFile:
    bf = bincopy.BinFile()
    for address, data in segments:
        bf.add_binary(data, address=address)
    if entry is not None:
        bf.execution_start_address = entry
    return bf


def write_hex(path: Path, *segments: Tuple[int, bytes], entry: Optional[int] = None) -> Path:
    path.write_text(binfile(*segments, entry=entry).as_ihex())
    return path


def write_srec(path: Path, *segments: Tuple[int, bytes], entry: Optional[int] = None) -> Path:
    path.write_text(binfile(*segments, entry=entry).as_srec())
    return path


def ihex_record(type_: int, address: int, data: bytes) -> str:
    return bincopy.pack_ihex(type_, address, len(data), data)


PT_LOAD, PT_NOTE = 1, 4
EM_ARM, EM_386, EM_X86_64 = 40, 3, 62
ET_EXEC, ET_REL = 2, 1


def elf32(segments: Sequence[Tuple[int, int, int, bytes, int]], machine: int = EM_ARM, e_type: int = ET_EXEC,
          entry: int = 0x0800_0001, big_endian: bool = False) -> bytes:
    """A minimal ELF32 executable: header, program headers, then each segment's file bytes.

    `segments`: (p_type, p_vaddr, p_paddr, file bytes, p_memsz) each.
    """
    order = ">" if big_endian else "<"
    header_size, phdr_size = 52, 32
    offset = header_size + phdr_size * len(segments)
    phdrs, payload = b"", b""
    for p_type, vaddr, paddr, data, memsz in segments:
        phdrs += struct.pack(order + "8I", p_type, offset + len(payload), vaddr, paddr, len(data), memsz, 5, 4)
        payload += data
    ident = b"\x7fELF" + bytes([1, 2 if big_endian else 1, 1]) + bytes(9)
    header = ident + struct.pack(order + "HHIIIIIHHHHHH", e_type, machine, 1, entry, header_size, 0, 0x0500_0000,
                                 header_size, phdr_size, len(segments), 40, 0, 0)
    return header + phdrs + payload


def elf64_x86() -> bytes:
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    return ident + struct.pack("<HHIQQQIHHHHHH", ET_EXEC, EM_X86_64, 1, 0x401000, 0, 0, 0, 64, 56, 0, 64, 0, 0)


# --- arm-none-eabi-gcc: a real program with .data stored in flash (LMA) but run from RAM (VMA), and .bss ----

STARTUP_C = r"""
extern unsigned _sidata[], _sdata[], _edata[], _sbss[], _ebss[];
volatile unsigned counter = 0x12345678u;          /* .data: VMA in RAM, LMA in flash */
volatile unsigned table[4] = {1, 2, 3, 4};        /* .data */
volatile unsigned zeroed[64];                     /* .bss: NOBITS */

void reset(void)
{
    unsigned *src = _sidata, *dst = _sdata;
    while (dst < _edata) *dst++ = *src++;
    for (dst = _sbss; dst < _ebss; ) *dst++ = 0;
    for (;;) counter++;
}

__attribute__((section(".isr_vector"), used))
void (* const vectors[])(void) = { (void (*)(void))0x20020000u, reset };
"""

LINK_LD = """
MEMORY { FLASH (rx) : ORIGIN = 0x08000000, LENGTH = 1024K
         RAM (rwx)  : ORIGIN = 0x20000000, LENGTH = 128K }
ENTRY(reset)
SECTIONS {
  .isr_vector : { KEEP(*(.isr_vector)) } > FLASH
  .text : { *(.text*) *(.rodata*) . = ALIGN(4); } > FLASH
  .data : { _sdata = .; *(.data*) . = ALIGN(4); _edata = .; } > RAM AT> FLASH
  _sidata = LOADADDR(.data);
  .bss (NOLOAD) : { _sbss = .; *(.bss*) *(COMMON) . = ALIGN(4); _ebss = .; } > RAM
}
"""


@pytest.fixture(scope="module")
def gcc_build(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """app.elf linked by arm-none-eabi-gcc, app.o (unlinked) and objcopy's app.bin of the ELF."""
    gcc = shutil.which("arm-none-eabi-gcc")
    assert gcc, "arm-none-eabi-gcc is required (Debian gcc-arm-none-eabi)"
    out = tmp_path_factory.mktemp("gcc")
    (out / "startup.c").write_text(STARTUP_C)
    (out / "link.ld").write_text(LINK_LD)
    flags = ["-mcpu=cortex-m4", "-mthumb", "-Os", "-nostdlib", "-ffreestanding"]
    subprocess.run([gcc, *flags, "-c", "startup.c", "-o", "app.o"], cwd=out, check=True)
    subprocess.run([gcc, *flags, "-T", "link.ld", "app.o", "-o", "app.elf"], cwd=out, check=True)
    subprocess.run(["arm-none-eabi-objcopy", "-O", "binary", "app.elf", "app.bin"], cwd=out, check=True)
    return {"elf": out / "app.elf", "obj": out / "app.o", "bin": out / "app.bin"}


# --- reading each format ---------------------------------------------------------------------------------------

def test_bin_goes_to_the_start_of_flash_by_default(tmp_path: Path) -> None:
    path = tmp_path / "app.bin"
    path.write_bytes(b"\x00\x00\x02\x20" + bytes(range(60)))
    image = load_image(path)
    assert image.segments == (Segment(FLASH_START, path.read_bytes()),)
    assert (image.start, image.end, image.size, image.source) == (FLASH_START, FLASH_START + 64, 64, str(path))


def test_bin_goes_to_the_address_given(tmp_path: Path) -> None:
    path = tmp_path / "app.bin"
    path.write_bytes(b"\xAB" * 100)
    image = load_image(path, address=0x0802_0000)
    assert (image.start, image.end) == (0x0802_0000, 0x0802_0064)


def test_intel_hex_with_two_segments_above_64k(tmp_path: Path) -> None:
    path = write_hex(tmp_path / "app.hex", (0x0800_0000, b"A" * 300), (0x0806_0010, b"BCD"), entry=0x0800_0101)
    image = load_image(path)
    assert image.segments == (Segment(0x0800_0000, b"A" * 300), Segment(0x0806_0010, b"BCD"))
    assert image.entry == 0x0800_0101
    assert image.format == "ihex"


def test_srec_reads_the_same_image_as_the_hex_file(tmp_path: Path) -> None:
    segments = ((0x0800_0000, bytes(range(256)) * 5), (0x0801_0000, b"\x01\x02"))
    hex_image = load_image(write_hex(tmp_path / "app.hex", *segments))
    srec_image = load_image(write_srec(tmp_path / "app.s19", *segments, entry=0x0800_0001))
    assert srec_image.segments == hex_image.segments
    assert srec_image.entry == 0x0800_0001


def test_hex_records_repeating_the_same_bytes_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "app.hex"
    records = [ihex_record(4, 0, b"\x08\x00"), ihex_record(0, 0x10, b"12345678"), ihex_record(0, 0x14, b"5678AB"),
               ihex_record(1, 0, b"")]
    path.write_text("\n".join(records) + "\n")
    assert load_image(path).segments == (Segment(0x0800_0010, b"12345678AB"),)


def test_elf_from_gcc_is_placed_like_objcopy_places_it(gcc_build: Dict[str, Path]) -> None:
    with open(gcc_build["elf"], "rb") as handle:
        loads = [s for s in ELFFile(handle).iter_segments() if s["p_type"] == "PT_LOAD"]
        # The scenario really has a .data segment whose load address differs from its run address.
        assert any(s["p_paddr"] != s["p_vaddr"] and s["p_filesz"] > 0 for s in loads)
    image = load_image(gcc_build["elf"])
    objcopy = gcc_build["bin"].read_bytes()
    assert image.start == FLASH_START
    assert image.end == FLASH_START + len(objcopy)
    assert image.data_at(FLASH_START, len(objcopy), fill=0x00) == objcopy  # objcopy pads gaps with 0
    assert (0x12345678).to_bytes(4, "little") in image.data_at(image.start, image.end - image.start)


def test_elf_data_is_placed_at_its_load_address_and_bss_is_not_programmed(tmp_path: Path) -> None:
    text = bytes(range(64))
    data = b"DATA" * 4
    path = tmp_path / "app.elf"
    path.write_bytes(elf32([
        (PT_LOAD, 0x0800_0000, 0x0800_0000, text, len(text)),
        (PT_LOAD, 0x2000_0000, 0x0800_0040, data, len(data) + 0x100),  # .data + .bss in one segment
        (PT_LOAD, 0x2000_0200, 0x2000_0200, b"", 0x400),                # .bss alone: NOBITS, file size 0
        (PT_NOTE, 0, 0, b"note", 4),
    ]))
    image = load_image(path)
    assert image.segments == (Segment(0x0800_0000, text + data),)
    assert image.entry == 0x0800_0001


def test_format_is_sniffed_when_the_extension_says_nothing(tmp_path: Path, gcc_build: Dict[str, Path]) -> None:
    hex_path = write_hex(tmp_path / "firmware", (0x0800_0000, b"hex"))
    srec_path = write_srec(tmp_path / "firmware.txt", (0x0800_0000, b"srec"))
    elf_path = tmp_path / "firmware.img"
    elf_path.write_bytes(gcc_build["elf"].read_bytes())
    assert (load_image(hex_path).format, load_image(srec_path).format, load_image(elf_path).format) == \
        ("ihex", "srec", "elf")


def test_format_override_beats_the_extension(tmp_path: Path) -> None:
    path = write_hex(tmp_path / "app.bin", (0x0800_0000, b"\x01\x02"))
    assert load_image(path, format="ihex").segments == (Segment(0x0800_0000, b"\x01\x02"),)
    assert load_image(path, format="hex").segments == (Segment(0x0800_0000, b"\x01\x02"),)
    assert load_image(path, format="bin").size == path.stat().st_size


def test_image_that_fits_the_part_passes_the_part_check(tmp_path: Path) -> None:
    path = tmp_path / "app.bin"
    path.write_bytes(b"\x00" * (512 * 1024))
    assert load_image(path, part=F407VE).size == 512 * 1024


# --- Image ----------------------------------------------------------------------------------------------------

def test_data_at_fills_gaps_and_reads_across_segments() -> None:
    image = Image([Segment(0x0800_0000, b"abcd"), Segment(0x0800_0008, b"ef")])
    assert image.data_at(0x0800_0002, 8) == b"cd\xff\xff\xff\xffef"
    assert image.data_at(0x0800_0002, 8, fill=0) == b"cd\x00\x00\x00\x00ef"
    assert image.data_at(0x0700_0000, 2) == b"\xff\xff"


def test_image_error_is_an_f4load_error() -> None:
    assert issubclass(ImageError, F4LoadError)


@st.composite
def agreeing_pieces(draw: st.DrawFn) -> Tuple[bytes, List[Piece]]:
    """A 'true' memory of 256 bytes at 0x0800_0000 and random pieces cut from it (overlapping, unsorted)."""
    truth = draw(st.binary(min_size=256, max_size=256))
    pieces = []
    for i in range(draw(st.integers(0, 12))):
        a = draw(st.integers(0, 255))
        b = draw(st.integers(a, 256))
        pieces.append(Piece(FLASH_START + a, truth[a:b], f"piece {i}"))
    return truth, pieces


@given(agreeing_pieces())
def test_merge_gives_sorted_separate_segments_holding_exactly_the_pieces(case: Tuple[bytes, List[Piece]]) -> None:
    truth, pieces = case
    segments = merge_pieces(pieces, "case")
    covered: Set[int] = set()
    for p in pieces:
        covered.update(range(p.address, p.address + len(p.data)))
    assert all(s.data for s in segments)
    assert all(before.end < after.address for before, after in zip(segments, segments[1:]))
    assert {a for s in segments for a in range(s.address, s.end)} == covered
    for s in segments:
        assert s.data == truth[s.address - FLASH_START:s.end - FLASH_START]


@settings(max_examples=50)
@given(agreeing_pieces(), st.integers(0, 255), st.integers(1, 255))
def test_merge_refuses_a_piece_that_disagrees(case: Tuple[bytes, List[Piece]], at: int, flip: int) -> None:
    truth, pieces = case
    if not any(p.address <= FLASH_START + at < p.address + len(p.data) for p in pieces):
        pieces = pieces + [Piece(FLASH_START + at, truth[at:at + 1], "cover")]
    bad = Piece(FLASH_START + at, bytes([truth[at] ^ flip]), "the bad one")
    with pytest.raises(ImageError, match=f"disagrees at {FLASH_START + at:#010x}"):
        merge_pieces(pieces + [bad], "case")


# --- refusals: one line, naming the file -----------------------------------------------------------------------

def _hex_lines(*segments: Tuple[int, bytes]) -> List[str]:
    return binfile(*segments).as_ihex().splitlines()


def _write(name: str, content: object) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(str(content))
        return path
    return make


def _corrupt_checksum(lines: List[str], index: int) -> List[str]:
    line = lines[index]
    lines[index] = line[:-2] + f"{(int(line[-2:], 16) + 1) % 256:02X}"
    return lines


_HEX = _hex_lines((0x0800_0000, bytes(range(200))))
_SREC = binfile((0x0800_0000, bytes(range(200)))).as_srec().splitlines()
_BAD_FILES: Dict[str, Tuple[Callable[[Path], Path], str]] = {
    "missing file": (lambda p: p / "nothing.hex", "nothing.hex: no such file"),
    "a directory": (lambda p: p, "is a directory"),
    "unreadable": (lambda p: Path("/proc/self/mem"), "/proc/self/mem: cannot read"),
    "empty bin": (_write("empty.bin", b""), "empty.bin: empty file"),
    "hex without data": (_write("nodata.hex", ":00000001FF\n"), "empty image"),
    "unknown format": (_write("blob.dat", b"\x00\x01garbage"), "unknown format"),
    "unknown format override": (_write("app.hex", "\n".join(_HEX)), "unknown format 'uf2'"),
    "hex bad checksum": (_write("sum.hex", "\n".join(_corrupt_checksum(list(_HEX), 2))),
                         "line 3: bad Intel HEX record: bad checksum: the record ends in "),
    "hex truncated line": (_write("cut.hex", "\n".join(_HEX[:3] + [_HEX[3][:21]])),
                           "line 4: bad Intel HEX record"),
    "hex odd digits": (_write("odd.hex", "\n".join(_HEX[:2] + [_HEX[2][:-1]] + _HEX[3:])), "line 3:"),
    "hex not hex digits": (_write("zz.hex", "\n".join(_HEX[:1] + [_HEX[1].replace("0", "Z", 3)])), "line 2:"),
    "hex without end record": (_write("noend.hex", "\n".join(_HEX[:-1])), "no end-of-file record"),
    "hex record after end": (_write("twice.hex", "\n".join(_HEX + _HEX[:2])), "line 10: record after the end"),
    "hex unknown record type": (_write("type.hex", "\n".join([ihex_record(7, 0, b"\x00")] + _HEX)),
                                "line 1: bad Intel HEX record: type 07"),
    "hex named .bin": (_write("app.bin", "\n".join(_HEX)),
                       "the name says raw binary but the content is Intel HEX: rename the file or pass format ihex"),
    "elf named .hex": (_write("app.hex", elf32([(PT_LOAD, 0x0800_0000, 0x0800_0000, b"abcd", 4)])),
                       "the name says Intel HEX but the content is ELF"),
    "hex is binary": (_write("bin.hex", b"\x00\xff\xfe:0102"), "line 1: not an Intel HEX file"),
    "srec bad checksum": (_write("sum.s19", "\n".join(_corrupt_checksum(list(_SREC), 1))),
                          "line 2: bad S-record: bad checksum"),
    "srec truncated line": (_write("cut.srec", "\n".join(_SREC[:1] + [_SREC[1][:30]])), "line 2: bad S-record"),
    "srec count mismatch": (_write("lost.s19", "\n".join(_SREC[:3] + _SREC[4:])),
                            "line 7: the count record says 7 data records but 6 precede it"),
    "elf not elf32": (_write("x64.elf", elf64_x86()), "ELF64 file"),
    "elf not arm": (_write("x86.elf", elf32([(PT_LOAD, 0x0800_0000, 0x0800_0000, b"abcd", 4)], machine=EM_386)),
                    "not little-endian ARM"),
    "elf big endian": (_write("be.elf", elf32([(PT_LOAD, 0x0800_0000, 0x0800_0000, b"abcd", 4)],
                                              big_endian=True)), "big-endian"),
    "elf only bss": (_write("bss.elf", elf32([(PT_LOAD, 0x2000_0000, 0x2000_0000, b"", 0x100)])),
                     "ELF file without loadable segments"),
    "elf object file": (_write("obj.o", elf32([], e_type=ET_REL)), "an object file? link it first"),
    "elf truncated": (_write("cut.elf", elf32([(PT_LOAD, 0x0800_0000, 0x0800_0000, b"x" * 64, 64)])[:-20]),
                      "segment 0 is truncated: 44 of 64 bytes"),
    "elf corrupt header": (_write("bad.elf", b"\x7fELF\x01\x01\x01" + bytes(9) + b"\x02"), "not a valid ELF file"),
    "overlap disagrees": (_write("overlap.hex", "\n".join(
        [ihex_record(4, 0, b"\x08\x00"), ihex_record(0, 0x10, b"1234"), ihex_record(0, 0x12, b"xy"),
         ihex_record(1, 0, b"")])), "overlapping data disagrees at 0x08000012: line 2 has 0x33, line 3 has 0x78"),
    "data in RAM": (_write("ram.elf", elf32([(PT_LOAD, 0x2000_0000, 0x2000_0000, b"code", 4)])),
                    "data at 0x20000000 is outside main flash (0x08000000..0x080fffff) (a segment loaded into RAM"),
    "linked at the boot alias": (_write("alias.hex", "\n".join(_hex_lines((0x0000_0000, b"abcd")))),
                                 "boot alias at 0x00000000"),
    "otp": (_write("otp.hex", "\n".join(_hex_lines((0x1FFF_7800, b"serial")))),
            "data at 0x1fff7800 is in the OTP area: f4load programs main flash only (OTP and option bytes are out"),
    "option bytes": (_write("opt.s19", binfile((0x1FFF_C000, b"\xaa\x55")).as_srec()), "in the option bytes"),
    "past 1 MB": (_write("big.hex", "\n".join(_hex_lines((0x080F_FFFE, b"abcd")))),
                  "data at 0x08100000 is outside main flash"),
    "bin at a RAM address": (_write("ram.bin", b"abcd"), "data at 0x20000000 is outside main flash"),
}
_OPTIONS = {"unknown format override": {"format": "uf2"}, "bin at a RAM address": {"address": 0x2000_0000}}


@pytest.mark.parametrize("case", list(_BAD_FILES))
def test_refused_file_gives_one_line_naming_the_file(tmp_path: Path, case: str) -> None:
    make, expected = _BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(ImageError) as caught:
        load_image(path, **_OPTIONS.get(case, {}))  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_too_large_for_the_part_names_both_ends(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"\x00" * (512 * 1024 + 4))
    load_image(path, part=F407VG)  # fits the 1 MB part
    with pytest.raises(ImageError) as caught:
        load_image(path, part=F407VE)
    assert str(caught.value) == (
        f"{path}: too large for the STM32F407VE: the image ends at 0x08080003 but its 512 KB of flash end at "
        "0x0807ffff (data from 0x08080000 on does not fit)")
    assert caught.value.address == 0x0808_0000


def test_a_start_address_for_a_hex_file_is_refused(tmp_path: Path) -> None:
    path = write_hex(tmp_path / "app.hex", (0x0800_0000, b"ab"))
    with pytest.raises(ImageError, match="applies to raw binaries only"):
        load_image(path, address=0x0800_4000)


def test_line_number_is_a_field_of_the_error(tmp_path: Path) -> None:
    make, _ = _BAD_FILES["hex bad checksum"]
    with pytest.raises(ImageError) as caught:
        load_image(make(tmp_path))
    assert caught.value.line == 3
    assert caught.value.source.endswith("sum.hex")
