"""The first step of f4load's data flow: a firmware file becomes an `Image`, checked before anything is erased.

An `Image` is a sorted list of non-overlapping, non-adjacent `Segment(address, data)`s: the bytes the file
asks to have in flash and nothing else (gaps are not filled in: what happens to them is the planner's choice,
`f4load.plan`).

Formats, chosen by the file name's extension, else by the content, else by `format=`:

| format | extensions | read with |
|---|---|---|
| `bin`  | .bin                                        | the file's bytes, placed at `address` (default 0x0800_0000) |
| `ihex` | .hex .ihex .ihx .h86 .a43                   | bincopy's record decoder (`unpack_ihex`) |
| `srec` | .srec .s19 .s28 .s37 .s .mot .mhx .mxt .exo | bincopy's record decoder (`unpack_srec`) |
| `elf`  | .elf .axf .out .o                           | pyelftools: PT_LOAD segments with p_filesz > 0 |

Why bincopy for Intel HEX and Motorola S-records: one maintained library (releases since 2015, still active)
that does both formats, reads and writes them (the tests write their files with it), and is pure Python with
no dependencies beyond pyelftools, which f4load already needs. The alternative `intelhex` does HEX only and
has had no release since 2020. f4load uses bincopy per record, not its `BinFile`, for two reasons: a bad record
must be reported with its line number (BinFile's errors carry none), and overlapping records holding the same
bytes are legal here (BinFile either refuses any overlap or lets the later record win silently).

ELF files are placed by *physical* address (p_paddr, the load address), the way `objcopy -O binary` and flash
tools place them: initialised data (.data) runs from RAM (p_vaddr) but is stored in flash (p_paddr, the
linker's `AT> FLASH`), and startup code copies it. The p_memsz - p_filesz tail of a segment (.bss, NOBITS) is
zeroed by startup code at run time and has nothing to program. Only ELF32 little-endian ARM files are accepted.

Every check happens here, before the planner runs and so before anything is erased; each failure is one
`ImageError` line naming the file (and the line or address): a missing, unreadable or empty file, an unknown
format, a file larger than any image for this family can be, a corrupt or truncated record, an ELF without
loadable data or for another machine, overlapping data that disagrees, data outside main flash (OTP and option
bytes are out of scope: f4load programs main flash only, RM0090 3.3), and an image too large for the part
(`Image.check_fits(part)`).

Input is bounded before it is read (`/dev/zero`, a pipe that never ends, a 4 GB file): the first 4 KB decide
the format, then at most the format's bound is read, refused at once when a regular file's size already
exceeds it. The bounds follow from the largest main flash of the family, 1 MB (`FAMILY_FLASH_SIZE`):

- `bin`: from the placement address to the end of that 1 MB (1 MB at 0x0800_0000): every byte is data.
- `ihex`, `srec`: 18 bytes of text per byte of flash, 18 MB: the least dense legal file, one data byte per
  record (S3: `S306`, 8 address digits, 2 data, 2 checksum, CRLF). Usual files (16 or 32 bytes per record)
  take 2.4-3 bytes of text per byte.
- `elf` from a file: no bound on the file, since only the headers and the PT_LOAD segments are read (each
  checked against main flash first, at most 1 MB in all): debug sections (DWARF, symbols) can be many times
  the code and are never read.
- `elf` from a pipe or device: 64 MB, kept in memory to be parsed (pyelftools seeks); for a larger one, give
  the file itself.
"""
from __future__ import annotations

import bisect
import io
import os
import re
import stat
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import bincopy
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from f4load import exit_status
from f4load.errors import F4LoadError
from f4load.part import (
    CCM_SIZE,
    CCM_START,
    FLASH_START,
    KB,
    OPTION_BYTES,
    OTP_LOCK_SIZE,
    OTP_LOCK_START,
    OTP_START,
    PARTS,
    SRAM_SIZE,
    SRAM_START,
    SYSTEM_MEMORY,
    SYSTEM_MEMORY_SIZE,
    Part,
)

# The largest main flash of the family (1 MB, the xG parts): no file may place data beyond it. The detected
# part may be smaller; that is checked by Image.check_fits(part).
FAMILY_FLASH_SIZE = max(p.flash_size for p in PARTS.values())
FAMILY_FLASH_END = FLASH_START + FAMILY_FLASH_SIZE
# Input bounds (module docstring): what the format can need to describe FAMILY_FLASH_SIZE bytes of flash.
SNIFF_BYTES = 4096                  # read first, to choose the format
TEXT_BYTES_PER_FLASH_BYTE = 18      # HEX/S-record text, one data byte per record (S3 with CRLF)
ELF_STREAM_LIMIT = 64 * KB * KB     # an ELF that cannot be seeked (a pipe) is read into memory up to this
OPTION_BYTES_SIZE = 16  # RM0090 3.8: 0x1FFF_C000..0x1FFF_C00F
ERASED = 0xFF

FORMATS = ("bin", "ihex", "srec", "elf")
# Other names a user may give for a format (e.g. on the command line).
FORMAT_ALIASES = {"binary": "bin", "raw": "bin", "hex": "ihex", "intelhex": "ihex", "s19": "srec", "s28": "srec",
                  "s37": "srec", "mot": "srec", "axf": "elf"}
_EXTENSIONS = {
    "bin": (".bin",),
    "ihex": (".hex", ".ihex", ".ihx", ".h86", ".a43"),
    "srec": (".srec", ".s19", ".s28", ".s37", ".s", ".mot", ".mhx", ".mxt", ".exo"),
    "elf": (".elf", ".axf", ".out", ".o"),
}
_FORMAT_NAMES = {"bin": "raw binary", "ihex": "Intel HEX", "srec": "Motorola S-record", "elf": "ELF"}
_ELF_MAGIC = b"\x7fELF"
_PT_LOAD = "PT_LOAD"

# Intel HEX record types (Intel HEX specification rev. A, 1988).
_IHEX_DATA, _IHEX_EOF, _IHEX_SEGMENT_BASE, _IHEX_SEGMENT_START, _IHEX_LINEAR_BASE, _IHEX_LINEAR_START = range(6)


class ImageError(F4LoadError):
    """A firmware file f4load will not program. One line: `<file>: [line N: ]<reason>`.

    Fields: `source` (the file name as given), `reason`, `line` (1-based, text formats) and `address` (the
    flash address concerned), either None when it does not apply.
    """
    exit_code = exit_status.USAGE

    def __init__(self, source: str, reason: str, line: Optional[int] = None, address: Optional[int] = None):
        self.source = source
        self.reason = " ".join(reason.split())  # one line, whatever a library put in its message
        self.line = line
        self.address = address
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{source}: {where}{self.reason}")


@dataclass(frozen=True)
class Segment:
    """Contiguous bytes at a flash address."""
    address: int
    data: bytes

    @property
    def end(self) -> int:
        """One past the last byte."""
        return self.address + len(self.data)

    def __repr__(self) -> str:
        return f"Segment({self.address:#010x}..{self.end:#010x}, {len(self.data)} bytes)"


class Piece(NamedTuple):
    """Bytes from one place in a file (a record, an ELF segment), before merging. `origin` names the place
    for error messages, e.g. "line 12" or "segment 2"."""
    address: int
    data: bytes
    origin: str


class Image:
    """What a firmware file asks to have in flash: sorted, coalesced segments, plus facts about the file.

    `start`/`end` bound the data (end is one past the last byte), `size` counts the bytes that are data (gaps
    between segments excluded), `entry` is the execution start address the file names, if any (informative).
    """

    def __init__(self, segments: Sequence[Segment], source: str = "<memory>", entry: Optional[int] = None,
                 format: Optional[str] = None) -> None:
        self.segments: Tuple[Segment, ...] = tuple(segments)
        for before, after in zip(self.segments, self.segments[1:]):
            if after.address <= before.end:
                raise ValueError(f"segments not sorted and coalesced: {before!r} then {after!r}")
        self.source = source
        self.entry = entry
        self.format = format
        self._starts = [s.address for s in self.segments]

    @classmethod
    def from_pieces(cls, pieces: Iterable[Piece], source: str = "<memory>", entry: Optional[int] = None,
                    format: Optional[str] = None) -> Image:
        """Merge pieces in any order: overlapping pieces must agree byte for byte; touching ones coalesce."""
        return cls(merge_pieces(pieces, source), source, entry, format)

    @classmethod
    def from_bytes(cls, data: bytes, address: int = FLASH_START, source: str = "<memory>") -> Image:
        return cls([Segment(address, bytes(data))] if data else [], source, format="bin")

    @property
    def start(self) -> int:
        return self.segments[0].address if self.segments else 0

    @property
    def end(self) -> int:
        return self.segments[-1].end if self.segments else 0

    @property
    def size(self) -> int:
        return sum(len(s.data) for s in self.segments)

    def __repr__(self) -> str:
        return (f"Image({self.source!r}, {len(self.segments)} segments, {self.size} bytes, "
                f"{self.start:#010x}..{self.end:#010x})")

    def _first_segment_ending_after(self, address: int) -> int:
        index = bisect.bisect_right(self._starts, address) - 1
        if index < 0 or self.segments[index].end <= address:
            index += 1
        return index

    def ranges(self, start: int, end: int) -> Iterator[Tuple[int, int]]:
        """The [a, b) ranges of [start, end) that hold image data, in order."""
        for segment in self.segments[self._first_segment_ending_after(start):]:
            if segment.address >= end:
                break
            yield max(start, segment.address), min(end, segment.end)

    def data_at(self, address: int, length: int, fill: int = ERASED) -> bytes:
        """`length` bytes from `address`: the image's bytes where it has data, `fill` in between."""
        out = bytearray([fill]) * length
        for a, b in self.ranges(address, address + length):
            segment = self.segments[bisect.bisect_right(self._starts, a) - 1]
            out[a - address:b - address] = segment.data[a - segment.address:b - segment.address]
        return bytes(out)

    def check_fits(self, part: Part) -> None:
        """Raise ImageError unless every byte lies in the main flash of `part` (RM0090 Table 5)."""
        for segment in self.segments:
            _check_in_flash(self.source, segment.address, segment.end, self.format)
            if segment.end > part.flash_end:
                first = max(segment.address, part.flash_end)
                raise ImageError(
                    self.source,
                    f"too large for the {part.name}: the image ends at {self.end - 1:#010x} but its "
                    f"{part.flash_size // KB} KB of flash end at {part.flash_end - 1:#010x} "
                    f"(data from {first:#010x} on does not fit)",
                    address=first)


def merge_pieces(pieces: Iterable[Piece], source: str) -> List[Segment]:
    """Sort and coalesce pieces into segments. Overlaps are fine when the bytes agree (some linkers and HEX
    tools repeat records); otherwise ImageError naming the address and both origins."""
    ordered = sorted((p for p in pieces if p.data), key=lambda p: p.address)
    segments: List[Segment] = []
    start: Optional[int] = None
    buffer = bytearray()
    # Which piece wrote the bytes up to where: for naming the earlier origin of a conflict.
    writers: List[Tuple[int, str]] = []
    for piece in ordered:
        if start is not None and piece.address <= start + len(buffer):
            offset = piece.address - start
            overlap = bytes(buffer[offset:offset + len(piece.data)])
            if overlap != piece.data[:len(overlap)]:
                index = next(i for i, (x, y) in enumerate(zip(overlap, piece.data)) if x != y)
                address = piece.address + index
                earlier = next(origin for end, origin in writers if end > address)
                raise ImageError(
                    source,
                    f"overlapping data disagrees at {address:#010x}: {earlier} has {overlap[index]:#04x}, "
                    f"{piece.origin} has {piece.data[index]:#04x}",
                    address=address)
            if len(piece.data) > len(overlap):
                buffer += piece.data[len(overlap):]
                writers.append((start + len(buffer), piece.origin))
        else:
            if start is not None:
                segments.append(Segment(start, bytes(buffer)))
            start, buffer = piece.address, bytearray(piece.data)
            writers = [(start + len(buffer), piece.origin)]
    if start is not None:
        segments.append(Segment(start, bytes(buffer)))
    return segments


def _check_in_flash(source: str, start: int, end: int, format: Optional[str] = None) -> None:
    """Data must lie in main flash (RM0090 Table 5). Name the region it is in instead, when it is known."""
    if FLASH_START <= start and end <= FAMILY_FLASH_END:
        return
    outside = start if not FLASH_START <= start < FAMILY_FLASH_END else FAMILY_FLASH_END
    regions = (
        (OTP_START, OTP_LOCK_START + OTP_LOCK_SIZE, "the OTP area"),
        (OPTION_BYTES, OPTION_BYTES + OPTION_BYTES_SIZE, "the option bytes"),
        (SYSTEM_MEMORY, SYSTEM_MEMORY + SYSTEM_MEMORY_SIZE, "system memory (the ST bootloader, read-only)"),
    )
    for low, high, name in regions:
        if low <= outside < high:
            raise ImageError(source, f"data at {outside:#010x} is in {name}: f4load programs main flash only "
                                     f"(OTP and option bytes are out of scope)", address=outside)
    hint = ""
    in_ram = SRAM_START <= outside < SRAM_START + SRAM_SIZE or CCM_START <= outside < CCM_START + CCM_SIZE
    if in_ram and format == "elf":
        hint = " (a segment loaded into RAM: does the linker script store it in flash with AT> FLASH?)"
    elif outside < FLASH_START and end <= FAMILY_FLASH_END - FLASH_START:
        hint = " (linked for the boot alias at 0x00000000? link for or place the data at 0x08000000)"
    raise ImageError(source, f"data at {outside:#010x} is outside main flash "
                             f"({FLASH_START:#010x}..{FAMILY_FLASH_END - 1:#010x}){hint}", address=outside)


# --- reading files --------------------------------------------------------------------------------------------

def format_for_name(path: Union[str, Path]) -> Optional[str]:
    """The format the file name's extension names, or None."""
    suffix = Path(path).suffix.lower()
    for name, extensions in _EXTENSIONS.items():
        if suffix in extensions:
            return name
    return None


def sniff_format(content: bytes) -> Optional[str]:
    """The format the content looks like (ELF magic, a valid first HEX or S-record), or None. A raw binary
    has no signature, so it is never guessed: a file is read as `bin` by its extension or `format="bin"`."""
    if content.startswith(_ELF_MAGIC):
        return "elf"
    first = next((line.strip() for line in content[:4096].decode("latin-1").splitlines() if line.strip()), "")
    try:
        if first.startswith(":"):
            bincopy.unpack_ihex(first)
            return "ihex"
        if first.startswith("S"):
            bincopy.unpack_srec(first)
            return "srec"
    except (bincopy.Error, ValueError):
        return None
    return None


def load_image(path: Union[str, Path], format: Optional[str] = None, address: Optional[int] = None,
               part: Optional[Part] = None) -> Image:
    """Read a firmware file into a checked Image.

    `format`: one of FORMATS (or a FORMAT_ALIASES name, e.g. "hex"), overriding the extension.
    `address`: where a raw binary goes (default 0x0800_0000; only for `bin`).
    `part`: also check that the image fits this part's flash.
    Raises ImageError (one line, naming the file) for every problem listed in the module docstring; never
    reads more of the file than its format's bound.
    """
    source = str(path)
    if format is not None:
        format = FORMAT_ALIASES.get(format.lower(), format.lower())
        if format not in FORMATS:
            raise ImageError(source, f"unknown format {format!r}: choose one of {', '.join(FORMATS)}")
    with _open_input(source) as (handle, size):
        head = _read_some(source, handle, SNIFF_BYTES)
        by_name, by_content = format_for_name(source), sniff_format(head)
        if format is None and by_name is not None and by_content not in (None, by_name):
            raise ImageError(source, f"the name says {_FORMAT_NAMES[by_name]} but the content is "
                                     f"{_FORMAT_NAMES[by_content]}: rename the file or pass format {by_content}")
        chosen = format or by_name or by_content
        if chosen is None:
            raise ImageError(source, "unknown format: the extension is none of "
                                     f"{' '.join(e for exts in _EXTENSIONS.values() for e in exts)} and the content "
                                     "is not ELF, Intel HEX or S-record (a raw binary? name it .bin or pass format "
                                     "bin)")
        if address is not None and chosen != "bin":
            raise ImageError(source, f"a start address applies to raw binaries only, and this is "
                                     f"{_FORMAT_NAMES[chosen]}")
        if not head:
            raise ImageError(source, "empty file")
        if chosen == "elf":
            if not head.startswith(_ELF_MAGIC):  # before reading on: a stream of zeros is not an ELF
                raise ImageError(source, f"not a valid ELF file: it does not start with the ELF magic "
                                         f"({_ELF_MAGIC.hex(' ').upper()})")
            if size is None:  # a pipe or device: pyelftools must seek, so the file goes into memory
                limit = ELF_STREAM_LIMIT
                why = (f"an ELF read from a pipe or device is kept in memory, at most {_amount(limit)}; give the "
                       "file itself (f4load reads only its headers and loadable segments)")
                stream: BinaryIO = io.BytesIO(_read_bounded(source, handle, head, size, limit, why))
            else:
                handle.seek(0)
                stream = handle
            pieces, entry = _elf_pieces(source, stream)
        else:
            start = FLASH_START if address is None else address
            limit, why = _size_bound(chosen, start)
            content = _read_bounded(source, handle, head, size, limit, why)
            if chosen == "bin":
                pieces, entry = [Piece(start, content, "the file")], None
            elif chosen == "ihex":
                pieces, entry = _ihex_pieces(source, content)
            else:
                pieces, entry = _srec_pieces(source, content)
    image = Image.from_pieces(pieces, source, entry, chosen)
    if not image.segments:
        raise ImageError(source, f"empty image: the {_FORMAT_NAMES[chosen]} file holds no data")
    for segment in image.segments:
        _check_in_flash(source, segment.address, segment.end, chosen)
    if part is not None:
        image.check_fits(part)
    return image


@contextmanager
def _open_input(source: str) -> Iterator[Tuple[BinaryIO, Optional[int]]]:
    """The open file and its size in bytes, None when it has none in advance (a pipe, a device, a socket)."""
    path = Path(source)
    if not path.exists():
        raise ImageError(source, "no such file")
    if path.is_dir():
        raise ImageError(source, "is a directory, not a firmware file")
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, after the format's reader is done with it
    except OSError as error:
        raise ImageError(source, f"cannot read: {error.strerror or error}") from None
    with handle:
        try:
            info = os.fstat(handle.fileno())
        except OSError as error:
            raise ImageError(source, f"cannot read: {error.strerror or error}") from None
        yield handle, info.st_size if stat.S_ISREG(info.st_mode) else None


def _read_some(source: str, handle: BinaryIO, count: int) -> bytes:
    try:
        return handle.read(count)
    except OSError as error:
        raise ImageError(source, f"cannot read: {error.strerror or error}") from None


def _size_bound(format: str, start: int) -> Tuple[int, str]:
    """The most bytes a `format` file can need for the largest flash of the family, and why, for the error."""
    if format == "bin":
        if FLASH_START <= start < FAMILY_FLASH_END:
            return FAMILY_FLASH_END - start, (f"a raw binary placed at {start:#010x} must end by "
                                              f"{FAMILY_FLASH_END - 1:#010x}, the end of the largest main flash "
                                              f"of the family ({_amount(FAMILY_FLASH_SIZE)})")
        # Placed outside main flash: the first bytes are enough for the error that names the region.
        return FAMILY_FLASH_SIZE, (f"a raw binary is at most the largest main flash of the family "
                                   f"({_amount(FAMILY_FLASH_SIZE)})")
    limit = FAMILY_FLASH_SIZE * TEXT_BYTES_PER_FLASH_BYTE
    return limit, (f"{_FORMAT_NAMES[format]} text for the largest main flash of the family "
                   f"({_amount(FAMILY_FLASH_SIZE)}) takes at most {_amount(limit)}, even at one data byte per "
                   f"record (usual files take 2.4-3 bytes of text per byte)")


def _read_bounded(source: str, handle: BinaryIO, head: bytes, size: Optional[int], limit: int, why: str) -> bytes:
    """The whole file (`head` already read), refused when it is larger than `limit`: from its size when it
    has one, else after reading one byte more than `limit` (never more)."""
    if size is not None and size > limit:
        raise ImageError(source, f"{size:,} bytes ({_amount(size)}), too large: {why}")
    content = head + _read_some(source, handle, max(0, limit + 1 - len(head)))
    if len(content) > limit:
        what = "from a pipe or device" if size is None else "(the file grew while it was read)"
        raise ImageError(source, f"more than {limit:,} bytes {what}, too large: {why}")
    return content


def _amount(size: int) -> str:
    """1048576 -> "1 MB", 786432 -> "768 KB", 1000 -> "1000 bytes"."""
    for unit, name in ((KB * KB * KB, "GB"), (KB * KB, "MB"), (KB, "KB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    for unit, name in ((KB * KB * KB, "GB"), (KB * KB, "MB"), (KB, "KB")):
        if size >= unit:
            return f"{size / unit:.1f} {name}"
    return f"{size} bytes"


def _text_lines(source: str, content: bytes, kind: str) -> Iterator[Tuple[int, str]]:
    """(line number, stripped record) of every non-blank line of a text format."""
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError as error:
        line = content[:error.start].count(b"\n") + 1
        raise ImageError(source, f"not an {kind} file: byte {content[error.start]:#04x} is not text",
                         line=line) from None
    for number, raw in enumerate(text.splitlines(), 1):
        record = raw.strip()
        if record:
            yield number, record


def _record_error(source: str, record_name: str, number: int, record: str, error: Exception) -> ImageError:
    """bincopy's message for a bad record, without the record itself (which can be long)."""
    message = str(error).replace(f"'{record}'", "").replace(f" {record}", "").replace("  ", " ")
    checksum = re.search(r"expected crc '([0-9A-F]{2})'.*got '([0-9A-F]{2})'", message)
    if checksum:
        message = f"bad checksum: the record ends in {checksum.group(2)}, its bytes need {checksum.group(1)}"
    elif isinstance(error, ValueError):  # bytearray.fromhex on a non-hex character or an odd-length line
        message = "not hexadecimal or an odd number of digits (truncated line?)"
    elif "wrong size" in message or "too short" in message:
        message += " (truncated line?)"
    return ImageError(source, f"bad {record_name}: {message}", line=number)


def _ihex_pieces(source: str, content: bytes) -> Tuple[List[Piece], Optional[int]]:
    kind = "Intel HEX"
    pieces: List[Piece] = []
    base, entry, end_seen = 0, None, None
    for number, record in _text_lines(source, content, kind):
        if end_seen is not None:
            raise ImageError(source, f"record after the end-of-file record of line {end_seen} "
                                     "(concatenated files? merge them first)", line=number)
        try:
            type_, offset, _size, data = bincopy.unpack_ihex(record)
        except (bincopy.Error, ValueError) as error:
            raise _record_error(source, "Intel HEX record", number, record, error) from None
        if type_ == _IHEX_DATA:
            pieces.append(Piece(base + offset, bytes(data), f"line {number}"))
        elif type_ == _IHEX_EOF:
            end_seen = number
        elif type_ in (_IHEX_SEGMENT_BASE, _IHEX_LINEAR_BASE) and len(data) == 2:
            shift = 4 if type_ == _IHEX_SEGMENT_BASE else 16
            base = int.from_bytes(data, "big") << shift
        elif type_ in (_IHEX_SEGMENT_START, _IHEX_LINEAR_START) and len(data) == 4:
            entry = int.from_bytes(data, "big")
        else:
            raise ImageError(source, f"bad {kind} record: type {type_:02X} with {len(data)} data bytes",
                             line=number)
    if end_seen is None:
        raise ImageError(source, "no end-of-file record (:00000001FF): the file is truncated")
    return pieces, entry


_SREC_ADDRESS_BYTES = {"1": 2, "2": 3, "3": 4, "5": 2, "6": 3, "7": 4, "8": 3, "9": 2}


def _srec_pieces(source: str, content: bytes) -> Tuple[List[Piece], Optional[int]]:
    kind = "S-record"
    pieces: List[Piece] = []
    entry, end_seen = None, None
    for number, record in _text_lines(source, content, kind):
        if end_seen is not None:
            raise ImageError(source, f"record after the termination record of line {end_seen} "
                                     "(concatenated files? merge them first)", line=number)
        try:
            type_, address, _size, data = bincopy.unpack_srec(record)
        except (bincopy.Error, ValueError) as error:
            raise _record_error(source, "S-record", number, record, error) from None
        if type_ in "123":
            pieces.append(Piece(address, bytes(data), f"line {number}"))
        elif type_ in "56":
            # S5/S6: the number of S1/S2/S3 records so far; a mismatch means lost lines.
            if address != len(pieces) % (1 << (8 * _SREC_ADDRESS_BYTES[type_])):
                raise ImageError(source, f"the count record says {address} data records but {len(pieces)} "
                                         "precede it: records are missing", line=number)
        elif type_ in "789":
            entry, end_seen = address, number
    # No check for a missing S7/S8/S9: writers omit it when there is no start address (bincopy does). A
    # file cut at a line boundary is caught by its S5/S6 count record when it has one; a cut line always is.
    return pieces, entry


def _elf_pieces(source: str, stream: BinaryIO) -> Tuple[List[Piece], Optional[int]]:
    """The PT_LOAD segments of the ELF in `stream` (seekable). Only the headers and those segments are read,
    each after its place in flash is checked, and at most the family's flash size of them in all."""
    try:
        elf = ELFFile(stream)
        header = elf.header
    except (ELFError, ValueError, OSError) as error:
        raise ImageError(source, f"not a valid ELF file: corrupt or truncated header ({error})") from None
    if elf.elfclass != 32:
        raise ImageError(source, f"ELF{elf.elfclass} file: f4load reads ELF32 ARM (Cortex-M) files only")
    if header["e_machine"] != "EM_ARM" or not elf.little_endian:
        endian = "little" if elf.little_endian else "big"
        raise ImageError(source, f"ELF for {header['e_machine']} ({endian}-endian), not little-endian ARM")
    pieces: List[Piece] = []
    loadable = 0
    try:
        for index, segment in enumerate(elf.iter_segments()):
            if segment["p_type"] != _PT_LOAD or segment["p_filesz"] == 0:
                continue
            _check_in_flash(source, segment["p_paddr"], segment["p_paddr"] + segment["p_filesz"], "elf")
            loadable += segment["p_filesz"]
            if loadable > FAMILY_FLASH_SIZE:
                raise ImageError(source, f"the loadable segments hold more than {_amount(FAMILY_FLASH_SIZE)} "
                                         f"(segment {index} reaches {loadable:,} bytes), the largest main flash "
                                         "of the family", address=segment["p_paddr"])
            data = segment.data()
            if len(data) != segment["p_filesz"]:
                raise ImageError(source, f"segment {index} is truncated: {len(data)} of {segment['p_filesz']} "
                                         f"bytes present", address=segment["p_paddr"])
            pieces.append(Piece(segment["p_paddr"], data, f"segment {index}"))
    except (ELFError, ValueError, OSError) as error:
        raise ImageError(source, f"corrupt ELF program headers: {error}") from None
    if not pieces:
        what = "an object file? link it first" if header["e_type"] == "ET_REL" else "nothing to program"
        raise ImageError(source, f"ELF file without loadable segments ({what})")
    entry = header["e_entry"] or None
    return pieces, entry



# --- several files in one run -------------------------------------------------------------------------------

def split_placement(argument: str) -> Tuple[str, Optional[int]]:
    """A file argument and the address it asks for: `app.bin@0x08008000` -> ("app.bin", 0x08008000). A name
    without `@ADDRESS`, or an existing file whose own name holds an `@`, -> (name, None)."""
    path, at, where = argument.rpartition("@")
    if not at or not path or Path(argument).exists():
        return argument, None
    try:
        return path, int(where.replace("_", ""), 0)
    except ValueError:
        raise ImageError(argument, f"{where!r} after '@' is not an address (write e.g. app.bin@0x08008000)") from None


def combine(images: Sequence[Image]) -> Image:
    """One image from several files (`f4load boot.hex app.bin@0x08008000`). Two files that place bytes at the
    same address are an error naming both, even when the bytes agree: that is almost always a wrong address,
    and it is found here, before the probe is opened."""
    if len(images) == 1:
        return images[0]
    spans = sorted((segment.address, segment.end, image.source) for image in images for segment in image.segments)
    reach, reach_source = spans[0][1], spans[0][2]
    for address, end, source in spans[1:]:
        if address < reach:
            raise ImageError(source, f"overlaps {reach_source}: both place data at {address:#010x}"
                                     f"..{min(end, reach) - 1:#010x} (check the @ADDRESS or --address)",
                             address=address)
        if end > reach:
            reach, reach_source = end, source
    formats = {image.format for image in images}
    pieces = [Piece(s.address, s.data, image.source) for image in images for s in image.segments]
    entries = [image.entry for image in images if image.entry is not None]
    return Image.from_pieces(pieces, " + ".join(image.source for image in images),
                             entries[0] if entries else None, formats.pop() if len(formats) == 1 else "mixed")


def load_images(arguments: Sequence[str], format: Optional[str] = None, address: Optional[int] = None) -> Image:
    """Load every `FILE[@ADDRESS]` argument (`split_placement`) and `combine` them. `address` places a raw
    binary given without `@ADDRESS` (one file only: several files say where each goes with @ADDRESS);
    `format` applies to every file."""
    if address is not None and len(arguments) > 1:
        raise ImageError(" ".join(arguments), "--address places one file; with several files put the address "
                                              "after each raw binary instead (app.bin@0x08008000)")
    images = []
    for argument in arguments:
        path, placed = split_placement(argument)
        images.append(load_image(path, format=format, address=placed if placed is not None else address))
    return combine(images)
