"""The program job as one batch of the stub: `f4load.session.Session.program`'s work, decided while it runs.

    file -> image -> plan -> stub protocol -> session -> **job** (one Run of the stub: Init, Stream, UnInit)

The stub is loaded and started once (f4load.stream); the host decides what to do with each sector as the
results come in, while the ring of commands keeps moving:

1. Before the batch, with the flash idle: in sectors the image covers only partly, the words where an image range
   starts or ends mid-word are read over SWD (a few words, usually none).
2. The batch starts with the CRC of every touched sector, and, where the image covers a sector only partly, the
   CRC of each image range's word-aligned extent: whether the flash already holds the image there, without
   reading the bytes around it.
3. Decisions (f4load.plan's rules): unchanged -> skip; blank -> program without erase; else erase and program,
   keeping the bytes of the sector outside the image (`keep`).
4. **Kept bytes are copied on the target**: the stub copies each 8 KB block of such a sector into a buffer of its
   own (COPY; the 15 buffers in SRAM and 8 in CCM RAM), the host reads the kept bytes out of RAM into the backup
   file - written and synced before that sector's erase is queued, so the host has every kept byte on disk
   before the sector's data could be lost for good - writes the image's bytes over them in RAM, and after the
   erase the stub programs each block from its buffer: the kept bytes are restored from RAM, not uploaded again.
   The next such sector is copied before the current one's erase, or between its program commands as buffers
   come free, so that its read-out overlaps the flash's own work.
5. One mass erase when the whole part is rewritten, nothing is unchanged, the kept blocks fit the buffers and
   MER is faster (f4load.floor; a 1 MB part).
6. The CRC of every rewritten sector at the end of the same batch (verify), then STOP; Run's UnInit locks
   FLASH_CR.

When the chip's CRC unit fails its known-answer check (answered by the same batch, f4load.crc), the CRCs are
taken from the flash read back over SWD instead, while the stub waits; the verify then reads back after the
batch.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from f4load import stream
from f4load.crc import KNOWN_ANSWER, CrcUnitCheck, stm32_crc32
from f4load.floor import mass_erase_beats, program_writes, sector_erase_seconds
from f4load.image import ERASED, Image
from f4load.part import Part, Sector
from f4load.plan import BUFFER_SIZE, Action, Plan, SectorPlan, blank_crc, gaps, plan_sector

LOG = logging.getLogger(__name__)

# Buffers the kept-byte copies may not take: the uploads of image data need some to keep the stub fed.
UPLOAD_BUFFERS = 3
# Copies read out between two polls of the stream (8 KB each at most: about 28 ms of SWD at 4 MHz).
READS_PER_POLL = 3
# When a job starts with programming (a blank sector: no erase first), its first uploads go in pieces of
# SMALL_UPLOAD, a third of a buffer: the flash starts after 2.7 KB have crossed the link, not 8 KB, and the last
# piece programmed after the link is done is short too. The link (4 MHz SWD: 3.5 ms a KB, and 2 ms of probe
# commands a piece) is only slightly faster than the flash (4.1 ms a KB), so small pieces for longer than
# SMALL_UPLOADS_BYTES would make the link, with its per-command cost, the bottleneck.
SMALL_UPLOAD = 2736
SMALL_UPLOADS_BYTES = 16384

ReadFlash = Callable[[int, int], bytes]
BackUp = Callable[[Sequence[Tuple[int, bytes]]], None]
CrcCheck = Callable[[CrcUnitCheck], bool]


@dataclass
class _Sector:
    """A touched sector as the job sees it."""
    sector: Sector
    outside: List[Tuple[int, int]]          # [a, b) ranges of the sector without image bytes
    crc_seq: int = 0                        # the CRC command of the whole sector
    extents: List[Tuple[int, int, int, int]] = field(default_factory=list)  # (address, size, expected, seq)
    plan: Optional[SectorPlan] = None       # final once decided (provisional while kept bytes are pending)
    pending_kept: bool = False              # erase, keeping bytes not read yet
    blocks: List[int] = field(default_factory=list)      # 8 KB blocks holding kept bytes (their addresses)
    copies: Dict[int, Tuple[int, int]] = field(default_factory=dict)  # block -> (buffer, COPY seq)
    pieces: Dict[Tuple[int, int, int], bytes] = field(default_factory=dict)  # (block, a, b) -> kept bytes read


@dataclass
class JobResult:
    plan: Plan
    report: stream.StreamReport
    program_writes: int
    verify: Dict[Tuple[int, int], int]      # (address, size) -> CRC the target gave (empty: not asked)


class ProgramJob:
    """One program job on an open StubRunner (see the module docstring). `read_flash(address, length)` reads
    over SWD (only while no flash operation runs); `backup(ranges)` writes every kept range so far to the backup
    file, synced; `crc_check(check)` records the CRC unit's known-answer check and says whether it passed."""

    def __init__(self, runner: stream.StubRunner, image: Image, part: Part, *, keep: bool, verify: bool,
                 psize: int, read_flash: ReadFlash, backup: BackUp, crc_check: CrcCheck,
                 progress: Optional[stream.Progress] = None,
                 before_work: Optional[Callable[[Plan], None]] = None,
                 check_protection: Optional[Callable[[Sequence[Sector]], None]] = None) -> None:
        self.runner = runner
        self.stream = runner.stream
        self.image, self.part, self.keep, self.verify, self.psize = image, part, keep, verify, psize
        self.read_flash, self.backup, self.crc_check = read_flash, backup, crc_check
        self.progress, self.before_work, self.check_protection = progress, before_work, check_protection
        self.sectors: List[_Sector] = []
        self.free: List[int] = list(range(stream.BUFFERS))   # buffers nothing still needs (oldest use first)
        self.kept_ranges: List[Tuple[int, bytes]] = []        # in the backup file so far
        self.crc_ok = True
        self.flash_busy = False  # an erase or program has been queued
        self.small_uploads = 0   # bytes still to upload in SMALL_UPLOAD pieces

    # --- 1-3: CRCs and decisions ---------------------------------------------------------------------------
    def run(self) -> JobResult:
        image = self.image
        touched = [s for s in self.part.sectors_touching(image.start, image.end)
                   if next(image.ranges(s.start, s.end), None) is not None]
        self.sectors = [_Sector(s, gaps(image, s)) for s in touched]
        extents = self._extents()
        operations: List[stream.Operation] = [stream.Crc(s.start, s.size) for s in touched]
        operations += [stream.Crc(a, size) for a, size, _ in extents]
        self.runner.open(operations, self.progress)
        seqs = iter(range(1, len(operations) + 1))
        for job_sector in self.sectors:
            job_sector.crc_seq = next(seqs)
        for (a, size, expected), seq in zip(extents, seqs):
            owner = self._sector_of(a)
            owner.extents.append((a, size, expected, seq))
        last = len(operations)
        self.runner.pump(lambda: self.stream.done >= last)
        self.crc_ok = self.crc_check(CrcUnitCheck(self.stream.read_crc_check(), KNOWN_ANSWER))
        for job_sector in self.sectors:
            self._decide(job_sector)
        mass = self._mass_erase()
        work = self._plan(mass)
        changing = [s.sector for s in self.sectors if s.plan is not None and s.plan.action is not Action.SKIP]
        if self.check_protection is not None:
            self.check_protection(changing)
        if self.before_work is not None:
            self.before_work(work)
        self._schedule(mass)
        verify: Dict[Tuple[int, int], int] = {}
        verify_seqs: List[Tuple[int, int, int]] = []
        if self.verify and self.crc_ok:
            for s in changing:
                verify_seqs.append((s.start, s.size, self.runner.append([stream.Crc(s.start, s.size)])[0]))
        report = self.runner.finish()
        for address, size, seq in verify_seqs:
            verify[(address, size)] = self.stream.crc_value(seq)
        final = self._plan(mass)
        writes = sum(program_writes(c.data, c.address, self.psize) for c in final.chunks)
        return JobResult(final, report, writes, verify)

    def _sector_of(self, address: int) -> _Sector:
        return next(s for s in self.sectors if s.sector.start <= address < s.sector.end)

    def _extents(self) -> List[Tuple[int, int, int]]:
        """(address, size, expected CRC) of the word-aligned extent of every image range in the sectors the image
        covers only partly (keep only); the bytes of an edge word outside the image are read now, with the flash
        idle."""
        out: List[Tuple[int, int, int]] = []
        if not self.keep:
            return out
        for s in self.sectors:
            if not s.outside:
                continue
            for a, b in self.image.ranges(s.sector.start, s.sector.end):
                start, end = a & ~3, (b + 3) & ~3
                data = bytearray(self.image.data_at(start, end - start))
                if start < a:
                    data[:a - start] = self.read_flash(start, a - start)
                if b < end:
                    data[b - start:] = self.read_flash(b, end - b)
                out.append((start, end - start, stm32_crc32(bytes(data))))
        return out

    def _crc(self, seq: int, address: int, size: int) -> int:
        """A CRC the batch computed, or (CRC unit not to be trusted) the flash read back and checksummed."""
        if self.crc_ok:
            return self.stream.crc_value(seq)
        return stm32_crc32(self.read_flash(address, size))

    def _decide(self, s: _Sector) -> None:
        """The sector's action from its CRCs (f4load.plan's rules); kept bytes, when needed, come later."""
        sector = s.sector
        current = self._crc(s.crc_seq, sector.start, sector.size)
        contents = self.image.data_at(sector.start, sector.size, fill=ERASED)
        if not s.outside or not self.keep or current in (blank_crc(sector.size), stm32_crc32(contents)):
            s.plan = plan_sector(self.image, sector, self.keep, lambda _s: current, None)
            return
        if all(self._crc(seq, a, size) == expected for a, size, expected, seq in s.extents):
            s.plan = SectorPlan(sector, Action.SKIP, (), f"unchanged: the image's bytes match ({current:#010x} "
                                "over the sector)", current, _image_bytes(self.image, sector), 0, current)
            return
        # The image differs: erase, keeping the rest. Provisional until the kept bytes are read.
        s.pending_kept = True
        s.blocks = sorted({block for a, b in s.outside
                           for block in range(a - a % BUFFER_SIZE, b, BUFFER_SIZE)})
        placeholder = plan_sector(self.image, sector, True, lambda _s: current, lambda _a, n: b"\x00" * n)
        s.plan = dataclasses.replace(placeholder, kept=(), reason=placeholder.reason + " (copied on the target)")

    def _mass_erase(self) -> bool:
        """One MER for the whole part (module docstring, step 5)."""
        if len(self.sectors) != len(self.part.sectors):
            return False
        if any(s.plan is None or s.plan.action is Action.SKIP for s in self.sectors):
            return False
        blocks = sum(len(s.blocks) for s in self.sectors)
        if blocks > stream.BUFFERS - UPLOAD_BUFFERS:
            return False
        erased = [s.sector for s in self.sectors if s.plan is not None and s.plan.action.erases]
        return mass_erase_beats(sector_erase_seconds(erased, self.psize), self.psize)

    def _plan(self, mass: bool) -> Plan:
        plans = tuple(s.plan for s in self.sectors if s.plan is not None)
        return Plan(self.part, self.image.source, plans, self.keep, mass)

    # --- 4: copies, read-out, backup, erases, programs ------------------------------------------------------
    def _schedule(self, mass: bool) -> None:
        work = [s for s in self.sectors if s.plan is not None and s.plan.action is not Action.SKIP]
        kept = [s for s in work if s.pending_kept]
        if mass:
            for s in kept:
                self._copy(s, everything=True)
            for s in kept:
                self._read_out(s)
            self._wait_published(self.runner.append([stream.EraseChip(self.part.flash_size)])[0])
            self.flash_busy = True
            for s in kept:
                self._overlay(s)
            for s in work:
                self._programs(s, [])
            return
        for index, s in enumerate(work):
            copied = s.pending_kept
            if copied:
                self._copy(s, everything=True)
                self._read_out(s)
            later = [k for k in kept if k is not s and work.index(k) > index]
            self._copy_ahead(later)
            assert s.plan is not None
            if s.plan.action.erases:
                erase = self.runner.append([stream.EraseSector(s.sector.index)])[0]
                self.flash_busy = True
                if copied:
                    self._wait_published(erase)
            if copied:
                self._overlay(s)
            self._programs(s, later)

    def _wait_published(self, seq: int) -> None:
        """Pump until command `seq` is in the ring (an erase the image's bytes may be written over copies
        during)."""
        self.runner.pump(lambda: self.stream.published >= seq)

    def _take_buffer(self) -> int:
        return self.free.pop(0)

    def _copy(self, s: _Sector, everything: bool, spare: int = 0) -> None:
        """COPY commands for the sector's blocks not yet copied: all of them, or while more than `spare` buffers
        stay free."""
        for block in s.blocks:
            if block in s.copies:
                continue
            if not everything and len(self.free) <= spare:
                return
            start = max(block, s.sector.start)
            end = min(block + BUFFER_SIZE, s.sector.end)
            buffer = self._take_buffer()
            seq = self.runner.append([stream.Copy(start, end - start, buffer)])[0]
            s.copies[block] = (buffer, seq)

    def _copy_ahead(self, later: Sequence[_Sector]) -> None:
        """Copy the blocks of the sectors to come while buffers are free beyond those the uploads need: their
        read-out then overlaps the flash's work on this sector."""
        for s in later:
            self._copy(s, everything=False, spare=UPLOAD_BUFFERS)

    def _read_out(self, s: _Sector) -> None:
        """Wait for the sector's copies, read its kept bytes out of RAM (and any other copy already done), then
        write the backup, make the sector's final plan and write the image's bytes over the copies."""
        def all_read() -> bool:
            for _ in range(READS_PER_POLL):
                if all(piece in s.pieces for piece in _pieces(s)) or not self._read_done_copies():
                    break
            return all(piece in s.pieces for piece in _pieces(s))
        self.runner.pump(all_read)
        ranges = [(a, _kept(s, a, b)) for a, b in s.outside]
        self.kept_ranges += ranges
        self.backup(self.kept_ranges)
        assert s.plan is not None
        current = s.plan.target_crc
        s.plan = plan_sector(self.image, s.sector, True, lambda _s: current or 0, lambda a, n: _kept(s, a, a + n))
        s.pending_kept = False

    def _overlay(self, s: _Sector) -> None:
        """The image's bytes over the sector's copies (while its erase runs: the copies serve nothing else)."""
        for block, (buffer, _seq) in s.copies.items():
            for a, b in self.image.ranges(block, block + BUFFER_SIZE):
                self._write_over(s, buffer, a, b)

    def _write_over(self, s: _Sector, buffer: int, a: int, b: int) -> None:
        """The image's bytes [a, b) over the copy in `buffer`, in whole words (edge bytes from the kept ones)."""
        start, end = a & ~3, (b + 3) & ~3
        data = bytearray(self.image.data_at(start, end - start))
        if start < a:
            data[:a - start] = _kept(s, start, a)
        if b < end:
            data[b - start:] = _kept(s, b, end)
        self.stream.write_words(self.stream.buffer_address(buffer, start), stream.le_words(bytes(data)))

    def _read_done_copies(self) -> bool:
        """Read out the kept bytes of one copy the stub has finished and the host has not read yet (False: none
        to read). A few per poll (READS_PER_POLL), so that the stream publishes and polls in between."""
        done = self.stream.done
        for s in self.sectors:
            for piece in _pieces(s):
                block, low, high = piece
                copy = s.copies.get(block)
                if copy is None or copy[1] > done or piece in s.pieces:
                    continue
                start, end = low & ~3, (high + 3) & ~3
                words = self.stream.read_words(self.stream.buffer_address(copy[0], start), (end - start) // 4)
                s.pieces[piece] = b"".join(w.to_bytes(4, "little") for w in words)[low - start:high - start]
                return True
        return False

    def _programs(self, s: _Sector, later: Sequence[_Sector]) -> None:
        """The sector's program commands: a block copied on the target from its buffer (the kept bytes restored
        from RAM), the others uploaded; each freed copy buffer goes to the next sector's copies at once."""
        assert s.plan is not None
        last_in_block: Dict[int, int] = {}
        for index, chunk in enumerate(s.plan.chunks):
            last_in_block[chunk.address - chunk.address % BUFFER_SIZE] = index
        for index, chunk in enumerate(s.plan.chunks):
            block = chunk.address - chunk.address % BUFFER_SIZE
            copy = s.copies.get(block)
            if copy is not None:
                self.runner.append([stream.Program(chunk.address, chunk.data, copy[0], preloaded=True)])
                if last_in_block[block] == index:
                    self._release(s, block)
                    self._copy_ahead(later)
            else:
                if not self.flash_busy:
                    self.small_uploads = SMALL_UPLOADS_BYTES  # nothing runs yet: start on small pieces
                data, address = chunk.data, chunk.address
                while self.small_uploads > 0 and len(data) > SMALL_UPLOAD:
                    self._upload(address, data[:SMALL_UPLOAD])
                    self.small_uploads -= SMALL_UPLOAD
                    data, address = data[SMALL_UPLOAD:], address + SMALL_UPLOAD
                self._upload(address, data)
                self.small_uploads -= len(data)
            self.flash_busy = True
        for block in list(s.copies):
            self._release(s, block)  # copied blocks with nothing left to program (kept bytes all 0xFF)
        self._copy_ahead(later)

    def _upload(self, address: int, data: bytes) -> None:
        buffer = self._take_buffer()
        self.runner.append([stream.Program(address, data, buffer)])
        self.free.append(buffer)

    def _release(self, s: _Sector, block: int) -> None:
        buffer, _seq = s.copies.pop(block)
        self.free.append(buffer)


def _pieces(s: _Sector) -> List[Tuple[int, int, int]]:
    """(block, a, b): the kept bytes of the sector cut at its 8 KB blocks."""
    out: List[Tuple[int, int, int]] = []
    for a, b in s.outside:
        for block in range(a - a % BUFFER_SIZE, b, BUFFER_SIZE):
            out.append((block, max(a, block), min(b, block + BUFFER_SIZE)))
    return out


def _kept(s: _Sector, a: int, b: int) -> bytes:
    """The kept bytes [a, b) as read out (a range inside the sector's bytes outside the image)."""
    out = bytearray()
    for (_block, low, high), data in sorted(s.pieces.items(), key=lambda item: item[0][1]):
        if high <= a or low >= b:
            continue
        out += data[max(a, low) - low:min(b, high) - low]
    if len(out) != b - a:
        raise AssertionError(f"kept bytes {a:#010x}..{b:#010x} not read out")
    return bytes(out)


def _image_bytes(image: Image, sector: Sector) -> int:
    return sum(b - a for a, b in image.ranges(sector.start, sector.end))


