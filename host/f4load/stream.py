"""Stream erase/program/copy/CRC commands to the RAM stub while its core keeps running.

pyocd drives a flash algorithm one page at a time: halt, load registers, resume, poll, read r0 - a dozen probe
round trips per page, about 1 ms each on an ST-Link. Here the stub's `Stream()` entry point stays running and
serves a ring of commands in RAM (protocol: stub/f4load_protocol.h, "Streaming"; docs/stub.md), and the host
only writes memory and polls five words:

    host                                          stub (Stream, running)
    data -> buffer b, then slot n (seq last) ---> sees slot n's seq = n, runs it (erase/program/...)
    ... fills the next buffers meanwhile ...      writes slot.result/value, then stub_seq = n (slot and buffer
    polls (stub_seq, status, crc_check,     <---  are the host's again), then looks at n + 1
           crc_seq, crc_value)

The host never halts the core between buffers. With the 15 x 8 KB buffers of SRAM (and 8 more in CCM RAM for
the stub's own copies) it fills about 120 KB while the first sectors erase, and keeps ahead of the programming
after that. A buffer mirrors one 8 KB block of flash: the data for address a lies at a % 8 KB in it.

A batch is one call of the stub's `Run` (Init, Stream, UnInit: FLASH_CR locked when it returns), started through
its `Call` trampoline with the arguments in RAM (f4load.stub_call); the image, its config word and Run's call
block go over in one transfer. `run_stream(target, image, operations)` is a whole session: load, one batch.
`StubRunner` keeps the stub loaded for several batches, and lets a batch grow while it runs (f4load.job:
the program job decides its erases and programs from the CRCs at its start):

    with StubRunner(target, image, psize=...) as runner:   # freeze IWDG, halt, load (image, config, call block)
        report = runner.run(operations, progress=cb)        # a batch: Run ... STOP, UnInit, halted
        runner.open([Crc(...), ...], cb)                     # a batch that grows:
        runner.pump(lambda: runner.stream.done >= 8)         #   follow it until the CRCs are done
        runner.append([EraseSector(3), Program(...)])        #   queue more, decided meanwhile
        report = runner.finish()                             #   STOP, UnInit
    # a clean exit checks FLASH_CR.LOCK; see StubRunner for the exits by exception

`progress(operation, nbytes)` is called as each stub command completes: an `EraseSector` with the sector's
size (an `EraseChip` with the flash size), a `Program` with the bytes of that buffer (one call per buffer, so
several per large Program), a `Copy` with its size, a `Crc` with its size. `target` is anything with pyocd's
Target methods used here (`halt`, `is_halted`, `read32`, `write32`, `read_memory_block32`,
`write_memory_block32`, `read_core_register`, `write_core_registers_raw`).

Truthfulness: a batch counts as done only when the stub said STOPPED for the STOP command, the core halted at
the halt word with Run's result 0 (the call block marked "returned" by Call), no reset flag appeared in RCC_CSR
(cleared at the start), and FLASH_CR reads locked. A reset of the target (DHCSR.S_RESET_ST, a new RCC_CSR flag,
a lockup, the core halted outside the stub) is raised as `TargetResetError`; a lost probe as `LinkLostError`;
a failure the stub reports as `StreamCommandError` (an `f4load.errors.StubError` that also names the host's
operation); these errors live in f4load.stub_call, with the entry-point calls and the probe access. Whatever
breaks a stream (also Ctrl-C or an exception of the progress callback), the host halts the core and locks
FLASH_CR before the exception leaves (`StubCall.abandon`; Run's own UnInit after a failure the stub reported
itself); an exception of the caller's own while a batch is open stops the stub after its current command.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

from f4load import flash_state, interrupt, part, protocol
from f4load.protocol import const, ffi
from f4load.registers import (
    DBGMCU_APB1_FZ,
    DBGMCU_APB1_FZ_DBG_IWDG_STOP,
    DHCSR,
    DHCSR_C_DEBUGEN,
    DHCSR_S_HALT,
    DHCSR_S_LOCKUP,
    DHCSR_S_RESET_ST,
    FLASH_CR,
    FLASH_CR_LOCK,
    RCC_CSR,
    RCC_CSR_RMVF,
    RESET_FLAGS,
)
from f4load.stub_call import (
    CALL_RETURNED,
    OFFSET_CALL_RESULT,
    LinkLostError,
    StreamCommandError,
    StreamError,
    StubCall,
    TargetResetError,
)
from f4load.stub_image import StubImage

# The errors are defined with the entry-point calls (f4load.stub_call) and are part of this module's API.
__all__ = [
    "Crc", "CrcResult", "EraseChip", "EraseSector", "LinkLostError", "Operation", "Program", "Progress",
    "StreamCommandError", "StreamError", "StreamReport", "StubRunner", "TargetResetError", "crc_map",
    "describe_operation", "expand", "run_stream", "sector_of",
]

# Protocol constants (stub/f4load_protocol.h).
SLOTS = const("F4LOAD_QUEUE_SLOTS")
BUFFER_SIZE = const("F4LOAD_BUFFER_SIZE")
CMD_ERASE_SECTOR = const("F4LOAD_CMD_ERASE_SECTOR")
CMD_ERASE_CHIP = const("F4LOAD_CMD_ERASE_CHIP")
CMD_PROGRAM = const("F4LOAD_CMD_PROGRAM")
CMD_CRC = const("F4LOAD_CMD_CRC")
CMD_STOP = const("F4LOAD_CMD_STOP")
CMD_COPY = const("F4LOAD_CMD_COPY")
# Buffers: F4LOAD_BUFFER_COUNT in SRAM after the queue, F4LOAD_CCM_BUFFER_COUNT more in CCM RAM.
SRAM_BUFFERS = const("F4LOAD_BUFFER_COUNT")
CCM_BUFFERS = const("F4LOAD_CCM_BUFFER_COUNT")
CCM_BUFFER_BASE = const("F4LOAD_CCM_BUFFER_BASE")
BUFFERS = SRAM_BUFFERS + CCM_BUFFERS
STATUS_IDLE = const("F4LOAD_STATUS_IDLE")
STATUS_STOPPED = const("F4LOAD_STATUS_STOPPED")
STATUS_FAILED = const("F4LOAD_STATUS_FAILED")
STATUS_NAMES = {const(f"F4LOAD_STATUS_{n}"): n for n in ("IDLE", "WAITING", "WORKING", "STOPPED", "FAILED")}

# Byte offsets inside struct f4load_queue / struct f4load_command, from the header through cffi.
QUEUE_SIZE = ffi.sizeof("struct f4load_queue")
OFFSET_QUEUED = ffi.offsetof("struct f4load_queue", "queued")
OFFSET_STUB_SEQ = ffi.offsetof("struct f4load_queue", "stub_seq")
OFFSET_STATUS = ffi.offsetof("struct f4load_queue", "status")
OFFSET_SLOTS = ffi.offsetof("struct f4load_queue", "slots")
OFFSET_ERROR = ffi.offsetof("struct f4load_queue", "error")
OFFSET_CHECK_WORDS = ffi.offsetof("struct f4load_queue", "check_words")
OFFSET_CRC_CHECK = ffi.offsetof("struct f4load_queue", "crc_check")
OFFSET_CRC_SEQ = ffi.offsetof("struct f4load_queue", "crc_seq")
COMMAND_SIZE = ffi.sizeof("struct f4load_command")
OFFSET_RESULT = ffi.offsetof("struct f4load_command", "result")
OFFSET_SEQ = ffi.offsetof("struct f4load_command", "seq")
# A slot is written whole in one transfer (op, address, size, buffer, result = value = 0), its seq word last:
# that word publishes the command.
assert OFFSET_RESULT == 16 and OFFSET_SEQ == 24 and COMMAND_SIZE == 28
# One five-word read polls stub_seq, status, the CRC unit's known answer, and the last CRC (seq, value).
assert OFFSET_STATUS == OFFSET_STUB_SEQ + 4 and OFFSET_CRC_CHECK == OFFSET_STATUS + 4
assert OFFSET_CRC_SEQ == OFFSET_CRC_CHECK + 4 and ffi.offsetof("struct f4load_queue", "crc_value") == OFFSET_CRC_SEQ + 4
POLL_WORDS = 5

# How long the host waits before it gives up on the stub: never before the stub gives up itself, so that a
# stuck flash is reported by the stub (BSY_TIMEOUT, with its error record) and not as "no progress".
# The stub's longest wait for BSY is a 128 KB sector erase at x8: DS8626's 4 s maximum, doubled
# (stub/flash_device.c ERASE_TIMEOUT_MS, not in the protocol header yet: keep the two equal).
# Init and UnInit wait for BSY that long too. The stub counts its timeouts in DWT cycles of the clock it
# believes in: with no clock given (Init clk = 0, CLOCK_MHZ = 0) and RCC_CFGR.SWS not HSI it assumes the
# F4's maximum, 168 MHz, so on a core that really runs at HSI's 16 MHz its waits last 168/16 = 10.5 times
# longer. On the virtual chip all of this is virtual time.
STUB_ERASE_TIMEOUT_MS = 8000
STUB_ASSUMED_CLOCK_MHZ = 168   # RM0090 / DS8626: the F405/407 maximum core clock
SLOWEST_CORE_CLOCK_MHZ = 16    # HSI, the clock after reset (RM0090 6.2.2)
STUB_LONGEST_WAIT_S = STUB_ERASE_TIMEOUT_MS / 1000 * STUB_ASSUMED_CLOCK_MHZ / SLOWEST_CORE_CLOCK_MHZ  # 84 s
CALL_TIMEOUT_S = STUB_LONGEST_WAIT_S + 10.0    # Init/UnInit, and Run's return after STOP (UnInit waits for BSY)
STALL_TIMEOUT_S = STUB_LONGEST_WAIT_S + 20.0   # the stream may go this long without completing a command
# A mass erase waits longer: DS8626's 32 s maximum at x8, doubled (stub/timing.c), with the same clock margin;
# the stream allows that much extra while an ERASE_CHIP command runs.
STUB_MASS_ERASE_TIMEOUT_MS = 64000
MASS_ERASE_EXTRA_S = (STUB_MASS_ERASE_TIMEOUT_MS - STUB_ERASE_TIMEOUT_MS) / 1000 * STUB_ASSUMED_CLOCK_MHZ \
    / SLOWEST_CORE_CLOCK_MHZ
# Stream returns right after it writes STOPPED or FAILED, and Run then calls UnInit, which waits for BSY only
# if an operation is still running (after a failure the stub reported, it is not): the core should be at the halt
# word at once.
RETURN_TIMEOUT_S = 1.0
# Every this many polls without progress, RCC_CSR is read too (DHCSR is read on every one).
RCC_CHECK_EVERY = 8
# Ctrl-C: how long the host lets the stub finish the command it is running before it halts the core where it
# is. The longest command is a 128 KB sector erase: DS8626 Table 40 maximum 2 s at x32, 4 s at x8.
INTERRUPT_GRACE_S = 5.0


# --- what the caller asks for ---------------------------------------------------------------------------

@dataclass(frozen=True)
class EraseSector:
    """Erase sector `sector` (RM0090 Table 5 numbering: 0-3 16 KB, 4 64 KB, 5-11 128 KB)."""
    sector: int

    def __str__(self) -> str:
        return f"erase sector {self.sector}"


@dataclass(frozen=True)
class EraseChip:
    """Mass erase (RM0090 3.6.3, MER) of the whole main flash, `flash_size` bytes (for progress and reports)."""
    flash_size: int

    def __str__(self) -> str:
        return f"mass erase ({self.flash_size // part.KB} KB)"


@dataclass(frozen=True)
class Program:
    """Program `data` at `address` (any alignment; the range must be erased).

    `buffer`: None, the stream uploads the data into a buffer of its own choosing (one command per 8 KB
    block); an index, the caller's buffer (stub/f4load_protocol.h, "Streaming"), and the range must lie in one
    8 KB block: with `preloaded` the data is already there (a Copy plus the caller's own writes), else the
    stream uploads it there once the buffer's earlier commands are done."""
    address: int
    data: bytes = field(repr=False)
    buffer: Optional[int] = None
    preloaded: bool = False

    def __str__(self) -> str:
        return f"program {len(self.data)} bytes at {self.address:#010x}"

    def __repr__(self) -> str:
        return f"Program(address={self.address:#010x}, data=<{len(self.data)} bytes>)"


@dataclass(frozen=True)
class Copy:
    """The flash words of [address, address + size) into stub buffer `buffer` (at the block offset): the bytes
    kept around an image, read out by the host and programmed back from there after the erase."""
    address: int
    size: int
    buffer: int

    def __str__(self) -> str:
        return f"copy {self.size} bytes at {self.address:#010x} into buffer {self.buffer}"


@dataclass(frozen=True)
class Crc:
    """CRC (f4load.crc.stm32_crc32) of [address, address + size) by the chip's CRC unit; word-aligned."""
    address: int
    size: int

    def __str__(self) -> str:
        return f"CRC of {self.size} bytes at {self.address:#010x}"


Operation = Union[EraseSector, EraseChip, Program, Copy, Crc]
# progress(operation, nbytes): a command of `operation` completed (erase: the sector's size, or the flash size
# for a mass erase; program: the bytes of that buffer; CRC: its size).
Progress = Callable[[Operation, int], None]


@dataclass(frozen=True)
class CrcResult:
    address: int
    size: int
    value: int


@dataclass
class StreamReport:
    """What a finished stream did."""
    commands: int = 0                 # stub commands run, STOP included
    sectors_erased: int = 0
    bytes_programmed: int = 0
    bytes_copied: int = 0             # COPY commands: flash into stub buffers
    crcs: List[CrcResult] = field(default_factory=list)
    polls: int = 0                    # (stub_seq, status) reads
    idle_polls: int = 0               # of those, polls that found no progress
    virtual_seconds: Optional[float] = None  # on the virtual chip: virtual time from load to UnInit
    reset_flags_before: int = 0       # RCC_CSR reset flags found (and cleared) at the start

    def __str__(self) -> str:
        text = (f"{self.commands} commands: {self.sectors_erased} sectors erased, {self.bytes_programmed} bytes "
                f"programmed, {len(self.crcs)} CRCs; {self.polls} polls ({self.idle_polls} idle)")
        if self.virtual_seconds is not None:
            text += f"; {self.virtual_seconds:.3f} s virtual"
        return text


# --- the session ----------------------------------------------------------------------------------------

@dataclass
class _Command:
    op: int
    address: int
    size: int
    operation: Optional[Operation]
    data: Optional[bytes] = None  # PROGRAM: the bytes to upload into the buffer (None: preloaded)
    buffer: Optional[int] = None  # PROGRAM, COPY: the buffer (None: the stream chooses one at publish time)

    @property
    def uploads(self) -> bool:
        return self.op == CMD_PROGRAM and self.data is not None


def expand(operations: Sequence[Operation], stop: bool = True) -> List[_Command]:
    """The stub commands for `operations`: one per erase, copy and CRC, one per buffer of program data, then
    STOP (unless `stop` is false). Program chunks end at F4LOAD_BUFFER_SIZE-aligned addresses, so none crosses a
    sector boundary. Sectors are numbered on the 1 MB map; the stub refuses those past this part's F_SIZE
    (BEYOND_END)."""
    sectors = part.SECTORS_1M
    out: List[_Command] = []
    for operation in operations:
        if isinstance(operation, EraseSector):
            if not 0 <= operation.sector < len(sectors):
                raise ValueError(f"{operation}: no such sector (0-{len(sectors) - 1})")
            out.append(_Command(CMD_ERASE_SECTOR, sectors[operation.sector].start, 0, operation))
        elif isinstance(operation, EraseChip):
            out.append(_Command(CMD_ERASE_CHIP, part.FLASH_START, 0, operation))
        elif isinstance(operation, Program) and operation.buffer is not None:
            if operation.address // BUFFER_SIZE != (operation.address + len(operation.data) - 1) // BUFFER_SIZE:
                raise ValueError(f"{operation}: a program from a given buffer must lie in one 8 KB block")
            out.append(_Command(CMD_PROGRAM, operation.address, len(operation.data), operation,
                                None if operation.preloaded else bytes(operation.data), operation.buffer))
        elif isinstance(operation, Copy):
            out.append(_Command(CMD_COPY, operation.address, operation.size, operation, buffer=operation.buffer))
        elif isinstance(operation, Program):
            data = bytes(operation.data)
            address, offset = operation.address, 0
            while offset < len(data):
                room = BUFFER_SIZE - (address + offset) % BUFFER_SIZE
                chunk = data[offset:offset + room]
                out.append(_Command(CMD_PROGRAM, address + offset, len(chunk), operation, chunk))
                offset += len(chunk)
        elif isinstance(operation, Crc):
            out.append(_Command(CMD_CRC, operation.address, operation.size, operation))
        else:
            raise TypeError(f"not a stream operation: {operation!r}")
    if stop:
        out.append(_Command(CMD_STOP, 0, 0, None))
    return out


def sector_of(operation: Optional[Operation]) -> Optional[int]:
    """The sector an erase or program operation works on (a program's first byte), else None."""
    if isinstance(operation, EraseSector):
        return operation.sector
    if isinstance(operation, Program):
        return _sector_of(operation.address)
    return None


def describe_operation(operation: Operation) -> str:
    """"erase sector 2", "program 8192 bytes at 0x08004000 (sector 1)"."""
    sector = sector_of(operation)
    return f"{operation} (sector {sector})" if isinstance(operation, Program) and sector is not None \
        else str(operation)


def _sector_of(address: int) -> Optional[int]:
    """The sector (1 MB map numbering) that holds `address`, or None outside main flash."""
    for sector in part.SECTORS_1M:
        if sector.start <= address < sector.end:
            return sector.index
    return None


def le_words(data: bytes) -> List[int]:
    """Little-endian 32-bit words of `data`, padded with 0xFF to a whole word."""
    data = bytes(data) + b"\xff" * (-len(data) % 4)
    return list(struct.unpack(f"<{len(data) // 4}I", data))


class _Stream(StubCall):
    """One stream session on one target (see the module docstring for the order of things); the probe
    access and entry-point calls are StubCall's."""

    def __init__(self, target: Any, image: StubImage, config: int, ram_base: int,
                 stall_timeout_s: float) -> None:
        super().__init__(target, image, ram_base, CALL_TIMEOUT_S)
        self.config = config
        self.queue = self.layout.queue_address
        # SRAM buffers after the queue, then CCM RAM's (stub/f4load_protocol.h): index -> address
        self.buffers = tuple(self.layout.buffers) + tuple(CCM_BUFFER_BASE + i * BUFFER_SIZE
                                                          for i in range(CCM_BUFFERS))
        self.stall_timeout_s = stall_timeout_s
        self.report = StreamReport()
        # pipeline state
        self.commands: List[_Command] = []
        self.published = 0   # the last command whose slot holds its seq
        self.queued = 0      # commands 1..queued went with the queue, before Stream started
        self.started = False  # a poll has seen status != IDLE: Stream cleared the other slots' seq
        self.last_crc = 0    # the last CRC command published (the polled crc_seq/crc_value are final up to it)
        self.done = 0        # stub_seq as last read
        self.buffer_free_after = [0] * len(self.buffers)  # buffer b is free once stub_seq >= this
        self.next_buffer = 0  # the next SRAM buffer for a Program without a buffer of its own
        self.crc_check: Optional[int] = None  # the CRC unit's answer to the known words (crc.KNOWN_ANSWER_WORDS)
        # (not `progress`: session.py's _ReportingStream subclass uses that name for its own callback)
        self.on_command: Optional[Progress] = None
        self.loaded = False
        self._started = 0.0
        self._fresh_load = False
        self._block_in_image = False

    # --- is the stub still running? ----------------------------------------------------------------------
    def _check_alive(self, idle_polls: int) -> None:
        """No progress: is the core still running the stub? DHCSR on every call, RCC_CSR now and then.

        On the virtual chip's ideal link a DHCSR read is also what lets time pass while the core runs."""
        dhcsr = self.read32(DHCSR)
        if dhcsr & DHCSR_S_RESET_ST or not dhcsr & DHCSR_C_DEBUGEN:
            raise TargetResetError("the target reset during the stream (DHCSR.S_RESET_ST)", self.current,
                                   self._reset_flags(), dhcsr)
        if dhcsr & DHCSR_S_LOCKUP:
            self._check_reset("core locked up")
            raise TargetResetError("the core locked up: it is no longer running the stub", self.current, 0, dhcsr)
        if dhcsr & DHCSR_S_HALT:
            _seq, status = self.read_words(self.queue + OFFSET_STUB_SEQ, 2)
            if status not in (STATUS_STOPPED, STATUS_FAILED):
                result, state = self.read_words(self.call_address + OFFSET_CALL_RESULT, 2)
                if state == CALL_RETURNED and result:  # Run returned before its stream: Init failed
                    self._fail_after_return(result)
                pc = int(self._link(lambda: self.target.read_core_register("pc")))
                self._check_reset(f"core halted at {pc:#010x}")
                raise TargetResetError(f"the core halted at {pc:#010x} while the stub said "
                                       f"{STATUS_NAMES.get(status, status)}: it is no longer running the stub",
                                       self.current, 0, dhcsr)
        if idle_polls % RCC_CHECK_EVERY == 0:
            self._check_reset("RCC_CSR")

    # --- the pipeline ------------------------------------------------------------------------------------
    def _slot_address(self, seq: int) -> int:
        return self.queue + OFFSET_SLOTS + (seq % SLOTS) * COMMAND_SIZE

    @staticmethod
    def _slot_words(op: int, address: int, size: int, buffer: Optional[int], seq: int) -> List[int]:
        """A whole slot: result and value cleared (the host has read those of the slot's previous command
        already), seq last."""
        return [op, address, size, buffer or 0, 0, 0, seq]

    def _can_publish(self, command: _Command, seq: int) -> bool:
        """Command `seq` can be published now: Stream has started (it clears the slots' seq first), its slot
        is free and, when it uploads data, so is its buffer. (A command the stub itself fills or reads a buffer
        with needs no wait: the stub runs commands in order, so the buffer's earlier commands are done by the
        time it runs.)"""
        if not self.started or seq - self.done > SLOTS:  # the slot still holds command seq - SLOTS, not yet done
            return False
        if command.uploads:
            buffer = self.next_buffer if command.buffer is None else command.buffer
            return self.buffer_free_after[buffer] <= self.done
        return True

    def _upload(self, command: _Command, seq: int) -> None:
        """The data of program command `seq` into its buffer, at the offset of its address in the 8 KB block."""
        assert command.data is not None
        if command.buffer is None:
            command.buffer = self.next_buffer
            self.next_buffer = (self.next_buffer + 1) % SRAM_BUFFERS
        head = command.address % 4  # an unaligned start: whole words from the word below (the stub reads bytes)
        self.write_words(self.buffer_address(command.buffer, command.address - head),
                         le_words(b"\xff" * head + command.data))

    def buffer_address(self, buffer: int, address: int) -> int:
        """Where the data for flash `address` lies in stub buffer `buffer` (the offset of its 8 KB block)."""
        return self.buffers[buffer] + address % BUFFER_SIZE

    def _publish_next(self) -> bool:
        """Publish the commands that can go now. Commands without data are published together (their slots in
        one write); a command with data to upload is published alone right after its data, so the stub can
        start it while the next buffer is filled. False if nothing could be published."""
        seq = self.published + 1
        if seq > len(self.commands):
            return False
        command = self.commands[seq - 1]
        if not self._can_publish(command, seq):
            return False
        first = seq
        while True:
            if command.uploads:
                self._upload(command, seq)
            if command.buffer is not None:
                self.buffer_free_after[command.buffer] = seq
            if command.uploads or seq == len(self.commands):
                break
            following = self.commands[seq]
            if following.uploads or not self._can_publish(following, seq + 1):
                break
            seq, command = seq + 1, following
        if any(first <= unread + SLOTS <= seq for unread in self.unread_crcs):
            self._read_crcs()  # their slots are about to take new commands
        self._write_slots(first, seq)
        self.published = seq
        return True

    def _write_slots(self, first: int, last: int) -> None:
        """Publish commands first..last: their slots, one transfer per run of adjacent slots (two when they wrap
        around the ring), written in address order, so each slot's seq lands after its other words."""
        run: List[int] = []
        start = first
        for seq in range(first, last + 1):
            if run and seq % SLOTS == 0:
                self.write_words(self._slot_address(start), run)
                run, start = [], seq
            command = self.commands[seq - 1]
            run += self._slot_words(command.op, command.address, command.size, command.buffer, seq)
            if command.op == CMD_CRC:
                self.last_crc = seq
        self.write_words(self._slot_address(start), run)

    def _initial_queue(self) -> List[int]:
        """The queue as written before Stream starts: magic, the leading commands without data to upload (the
        CRCs, erases) in their slots and `queued` covering them, the words for the CRC unit's check. The stub
        starts on them the moment it runs (and clears the seq of the other slots)."""
        from f4load.crc import KNOWN_ANSWER_WORDS

        words = [0] * (QUEUE_SIZE // 4)
        words[0] = const("F4LOAD_QUEUE_MAGIC")
        seq = 0
        while seq < min(len(self.commands), SLOTS - 1) and not self.commands[seq].uploads:
            command = self.commands[seq]
            seq += 1
            if command.buffer is not None:
                self.buffer_free_after[command.buffer] = seq
            at = (OFFSET_SLOTS + (seq % SLOTS) * COMMAND_SIZE) // 4
            words[at:at + COMMAND_SIZE // 4] = self._slot_words(command.op, command.address, command.size,
                                                                command.buffer, seq)
            if command.op == CMD_CRC:
                self.last_crc = seq
        words[OFFSET_QUEUED // 4] = seq
        words[OFFSET_STATUS // 4] = STATUS_IDLE
        at = OFFSET_CHECK_WORDS // 4
        words[at:at + len(KNOWN_ANSWER_WORDS)] = KNOWN_ANSWER_WORDS
        self.published = self.queued = seq
        # Up to the last slot used (slot 0, unused, included): the rest of the ring is written before use.
        return words[:(OFFSET_SLOTS + (seq + 1) * COMMAND_SIZE) // 4]

    def _crc_values(self, first: int, last: int) -> Dict[int, int]:
        """{seq: value} of the unread CRC commands among first..last (all completed, slots not yet reused): one
        read over the slots they occupy (two when they wrap around the ring)."""
        seqs = [seq for seq in range(first, last + 1) if seq in self.unread_crcs]
        out: Dict[int, int] = {}
        if not seqs:
            return out
        runs: List[List[int]] = []
        for seq in seqs:
            if runs and seq % SLOTS > runs[-1][-1] % SLOTS:
                runs[-1].append(seq)
            else:
                runs.append([seq])
        for run in runs:
            low, high = run[0] % SLOTS, run[-1] % SLOTS
            base = self.queue + OFFSET_SLOTS + low * COMMAND_SIZE
            words = self.read_words(base, (high - low + 1) * COMMAND_SIZE // 4)
            for seq in run:
                at = ((seq % SLOTS - low) * COMMAND_SIZE + OFFSET_RESULT) // 4
                out[seq] = words[at + 1]
        return out

    def _poll(self) -> Tuple[int, int]:
        """(stub_seq, status), from one read that also brings the CRC unit's answer (kept once Stream has
        started: status no longer IDLE, the slots' seq cleared, commands may be published) and the last CRC
        done: its value is kept when no later CRC was published, the stub cannot change it any more."""
        stub_seq, status, crc_check, crc_seq, crc_value = self.read_words(self.queue + OFFSET_STUB_SEQ, POLL_WORDS)
        self.report.polls += 1
        if status != STATUS_IDLE:
            self.started = True
            if self.crc_check is None:
                self.crc_check = crc_check
        if crc_seq and crc_seq == self.last_crc and crc_seq not in self.crc_results:
            self.crc_results[crc_seq] = crc_value
            self.unread_crcs.discard(crc_seq)
        return stub_seq, status

    def read_crc_check(self) -> int:
        """The CRC unit's answer to the known words, as Stream computed it when it started (taken from the
        polls; one read if none has seen the stub started yet)."""
        if self.crc_check is None:
            self.crc_check = self.read_words(self.queue + OFFSET_CRC_CHECK, 1)[0]
        return self.crc_check

    def crc_value(self, seq: int) -> int:
        """The value of CRC command `seq` (completed)."""
        if seq in self.unread_crcs:
            self._read_crcs()
        return self.crc_results[seq]

    def _read_crcs(self) -> None:
        """Read the values of the completed CRC commands not known yet (from a poll) in as few transfers as
        their slots allow (they are read before a slot is reused, when the caller asks, and at the end)."""
        if not self.unread_crcs:
            return
        self.crc_results.update(self._crc_values(min(self.unread_crcs), max(self.unread_crcs)))
        self.unread_crcs.clear()

    def _on_progress(self, stub_seq: int) -> None:
        """Commands (done, stub_seq] completed: count them, note CRC values to read before their slots are
        reused."""
        for seq in range(self.done + 1, stub_seq + 1):
            command = self.commands[seq - 1]
            self.report.commands += 1
            size = command.size
            if command.op == CMD_ERASE_SECTOR:
                self.report.sectors_erased += 1
                assert isinstance(command.operation, EraseSector)
                size = part.SECTORS_1M[command.operation.sector].size
            elif command.op == CMD_ERASE_CHIP:
                assert isinstance(command.operation, EraseChip)
                size = command.operation.flash_size
                self.report.sectors_erased += len(part.sectors_for(size))
            elif command.op == CMD_PROGRAM:
                self.report.bytes_programmed += command.size
            elif command.op == CMD_CRC and seq not in self.crc_results:
                self.unread_crcs.add(seq)
            elif command.op == CMD_COPY:
                self.report.bytes_copied += command.size
            if self.on_command is not None and command.operation is not None:
                self.on_command(command.operation, size)
        self.done = stub_seq
        following = self.commands[stub_seq] if stub_seq < len(self.commands) else None
        self.current = following.operation if following is not None else None

    def _stall_limit(self, seq: int) -> float:
        """How long command `seq` may run without progress: a mass erase gets its longer timeout on top."""
        running = self.commands[seq - 1] if 0 < seq <= len(self.commands) else None
        return self.stall_timeout_s + (MASS_ERASE_EXTRA_S if running and running.op == CMD_ERASE_CHIP else 0.0)

    def _fail(self) -> None:
        """status FAILED: command stub_seq + 1 failed; the record is in the queue."""
        seq = self.done + 1
        command = self.commands[seq - 1] if seq <= len(self.commands) else None
        code = self.read_words(self._slot_address(seq) + OFFSET_RESULT, 1)[0]
        record = self.error_record(self.queue + OFFSET_ERROR)
        if not code:
            code = record.result
        raise StreamCommandError(code, record, command.operation if command is not None else None, seq)

    def _pump(self, until: Optional[Callable[[], bool]] = None) -> None:
        """Keep the ring full and follow the stub until it has run STOP, or (`until`) until that says so: it is
        asked before every poll, once what can be published is."""
        last_progress = self.now()
        idle = 0
        stopped_early = False
        while True:
            if interrupt.requested():
                self._stop_early()
            while self._publish_next():
                pass
            if until is not None and until():
                return
            stub_seq, status = self._poll()
            if status == STATUS_FAILED:
                if stub_seq > self.done:
                    self._on_progress(stub_seq)
                self._fail()
            progressed = stub_seq > self.done
            if progressed:
                if stub_seq > self.published:
                    raise StreamError(f"the stub says it finished command {stub_seq}, but only "
                                      f"{self.published} were published", self.current)
                self._on_progress(stub_seq)
                last_progress, idle = self.now(), 0
            # STOPPED is checked after every poll, progress or not: the stub writes stub_seq = STOP, then its
            # error record, a dmb, then status = STOPPED. A poll in that gap records the progress and sees
            # WORKING; every later poll finds no new progress, only the new status.
            if status == STATUS_STOPPED:
                if self.done == len(self.commands) and self.commands[-1].op == CMD_STOP:
                    return
                # stub_seq and status are two word reads: the core may store both between them, so one poll
                # can see the old stub_seq beside STOPPED. Only a second such poll is a stub that stopped early.
                if stopped_early:
                    raise StreamError(f"the stub stopped after command {stub_seq}, not at STOP", self.current)
                stopped_early = True
                continue
            if progressed:
                continue
            idle += 1
            self.report.idle_polls += 1
            self._check_alive(idle)
            limit = self._stall_limit(stub_seq + 1)
            if self.now() - last_progress > limit:
                raise StreamError(f"no progress for {limit:g} s (stub status "
                                  f"{STATUS_NAMES.get(status, status)}, command {stub_seq + 1})", self.current)

    # --- what the batch did to the flash, and Ctrl-C -------------------------------------------------------
    def steps(self) -> List[flash_state.Step]:
        """(kind, sector) of every command of the batch, for f4load.flash_state (a mass erase: every sector)."""
        kinds = {CMD_ERASE_SECTOR: flash_state.ERASE, CMD_PROGRAM: flash_state.PROGRAM}
        out: List[flash_state.Step] = []
        for command in self.commands:
            if command.op == CMD_ERASE_CHIP and isinstance(command.operation, EraseChip):
                sectors = part.sectors_for(command.operation.flash_size)
                out.append((flash_state.ERASE, tuple(s.index for s in sectors)))
                continue
            kind = kinds.get(command.op, "")
            out.append((kind, _sector_of(command.address) if kind else None))
        return out

    def flash_text(self, done: int, cut: Optional[int]) -> str:
        """What the flash holds after commands 1..done, with command `cut` possibly half done (flash_state)."""
        return flash_state.describe(self.steps(), done, cut)

    def _stop_early(self) -> None:
        """A signal asked f4load to stop (f4load.interrupt): let the stub finish the command it is running and
        stop right after it, so that no sector is left half-erased, then raise Interrupted; the way out
        (`_give_up`) halts the core and locks FLASH_CR, as for any exception.

        Every published command the stub has not completed gets the op STOP. Only that word is written: the
        stub reads a slot's op once, when it starts the command (stream.c), and the address, size and buffer
        while it runs it, so the command it is running is not affected and the next one it reads is a STOP.
        When nothing is left queued, one STOP is published. A second signal, a stub that does not stop within
        INTERRUPT_GRACE_S, or a reset end the wait: the core is then halted wherever it is."""
        name = interrupt.requested() or "SIGINT"
        for seq in range(self.done + 1, self.published + 1):
            self.write32(self._slot_address(seq), CMD_STOP)
        deadline = self.now() + INTERRUPT_GRACE_S
        # the batch's own STOP is already queued
        stop_published = self.published >= len(self.commands) and self.commands[-1].op == CMD_STOP
        idle = 0
        while True:
            stub_seq, status = self._poll()
            if status in (STATUS_STOPPED, STATUS_FAILED):
                break
            if not stop_published and self.started and self.published + 1 - stub_seq <= SLOTS:
                self._publish_stop()
                stop_published = True
                continue
            idle += 1
            self._check_alive(idle)
            if interrupt.insisted() or self.now() > deadline:
                running = self.commands[stub_seq].operation if stub_seq < len(self.commands) else None
                why = "a second signal" if interrupt.insisted() else f"no stop within {INTERRUPT_GRACE_S:g} s"
                detail = f"{why}: halted the core in the middle of {running}" if running else why
                effect = self.flash_text(stub_seq, stub_seq + 1)
                raise interrupt.Interrupted(f"{detail}; {effect}" if effect else detail, signal_name=name)
        if status == STATUS_FAILED:
            if stub_seq > self.done:
                self._on_progress(stub_seq)
            self._fail()  # the command that was running failed: that is the news
        # STOPPED at stub_seq: the commands before it ran as published; stub_seq itself was a STOP.
        finished = stub_seq >= len(self.commands)
        if stub_seq - 1 > self.done:
            self._on_progress(min(stub_seq - 1, len(self.commands)))
        self._wait_halted("Stream", RETURN_TIMEOUT_S)
        last = self.commands[self.done - 1].operation if self.done else None
        if finished:
            detail = "the stub had just finished its commands"
        elif last is not None:
            detail = f"the stub stopped after {last}, nothing is half done"
        else:
            detail = "the stub stopped before its first command"
        effect = self.flash_text(self.done, None)
        if not flash_state.changed(self.steps(), self.done, None):
            detail += "; nothing was erased or programmed"
        elif effect:
            detail += f"; {effect}"
            if not flash_state.complete(self.steps(), self.done):
                detail += "; run the same command again to finish"
            elif not finished:
                detail += "; the check by CRC did not run"
        raise interrupt.Interrupted(detail, signal_name=name)

    # --- after a reset or a lost link: what was running, what the flash holds --------------------------------
    def _stub_record(self) -> Optional[Tuple[int, int]]:
        """(stub_seq, status) as the stub left them in its queue, when they can be trusted after a reset. SRAM
        keeps its contents through a reset, but an application that ran since may have overwritten it, so the
        record must be consistent with what the host published: the magic, `queued`, stub_seq between the last
        progress seen and the last command published, and for WORKING the slot of the next command holding
        that command's number and address. None otherwise (or when the probe cannot read it)."""
        try:
            magic, queued, stub_seq, status = self.read_words(self.queue, 4)
            if magic != const("F4LOAD_QUEUE_MAGIC") or queued != self.queued:
                return None
            if not self.done <= stub_seq <= self.published or status not in STATUS_NAMES:
                return None
            if status == const("F4LOAD_STATUS_WORKING") and stub_seq < len(self.commands):
                _op, address, _size, _buffer, _result, _value, seq = self.read_words(
                    self._slot_address(stub_seq + 1), COMMAND_SIZE // 4)
                if seq != stub_seq + 1 or address != self.commands[stub_seq].address:
                    return None
        except StreamError:
            return None
        return stub_seq, status

    def _locate(self, error: StreamError) -> None:
        """Fill in `error.in_progress`, `located_by` and `flash_after` (StreamError) after a reset or a lost
        link, and name the operation in the message. After a reset the stub's own record in RAM says which
        command was running (status WORKING: command stub_seq + 1; WAITING: none); without it (a lost link, or
        a record an application overwrote) only the host's last poll is known: the command after the last one
        seen complete, possibly later ones up to the last published. After a lost link a board that kept power
        goes on: the stub completes what was published, then waits with FLASH_CR unlocked until a reset."""
        if isinstance(error, TargetResetError) and not error.reset_flags:
            try:  # seen in DHCSR first: the flags are the evidence of the cause (read once, here)
                error.reset_flags = self._reset_flags()
            except StreamError:
                pass
        record = self._stub_record() if isinstance(error, TargetResetError) else None
        working = const("F4LOAD_STATUS_WORKING")
        if record is not None:
            done, status = record
            cut = done + 1 if status == working and done < len(self.commands) else None
            error.located_by = "the stub's own record"
            error.in_progress = self.commands[cut - 1].operation if cut else None
            error.flash_after = self.flash_text(done, cut)
        elif isinstance(error, LinkLostError):
            error.located_by = "the host's last poll"
            error.in_progress = self.current
            queued = [c.operation for c in self.commands[self.done:self.published] if c.operation is not None]
            after = self.flash_text(self.published, None)
            goes_on = f"the stub goes on up to {queued[-1]} and then" if queued else "the stub"
            error.flash_after = (f"if the board kept power, {goes_on} waits with FLASH_CR unlocked until a reset: "
                                 f"{after}" if after else "")
        else:
            cut = self.done + 1 if self.done < len(self.commands) else None
            error.located_by = "the host's last poll"
            error.in_progress = self.current
            error.flash_after = self.flash_text(self.done, cut)
            later = [c.operation for c in self.commands[self.done + 1:self.published] if c.operation is not None]
            if later:
                error.flash_after += f" (or later: the stub may have got as far as {later[-1]})"
        error.request = error.in_progress
        where = f" (during: {error.in_progress}, by {error.located_by})" if error.in_progress is not None else \
            (" (between two commands, by the stub's own record)" if record is not None else "")
        error.args = (error.base_message + where,) + tuple(error.args[1:])

    def stop_after_current(self) -> None:
        """Stop the stub after the command it is running: every published command not yet done becomes STOP
        (only the op word: the stub reads it once, when it starts a command) and one STOP is published behind
        them; then wait for Run to return (UnInit, FLASH_CR locked)."""
        for seq in range(self.done + 1, self.published + 1):
            self.write32(self._slot_address(seq), CMD_STOP)
        stop_published = False
        deadline = self.now() + INTERRUPT_GRACE_S
        while True:
            stub_seq, status = self._poll()
            if status in (STATUS_STOPPED, STATUS_FAILED):
                break
            if not stop_published and self.started and self.published + 1 - stub_seq <= SLOTS:
                self._publish_stop()  # behind the published commands, in case the stub got past them all
                stop_published = True
                continue
            if self.now() > deadline:
                raise StreamError(f"the stub did not stop within {INTERRUPT_GRACE_S:g} s", self.current)
            self._check_alive(1)
        self._wait_halted("Run", RETURN_TIMEOUT_S)
        self.loaded = False

    def _publish_stop(self) -> None:
        """Publish one STOP after the last published command (its slot free, Stream started)."""
        seq = self.published + 1
        self.write_words(self._slot_address(seq), self._slot_words(CMD_STOP, 0, 0, None, seq))
        self.published = seq

    def _lock_after_failure(self, error: StreamCommandError) -> None:
        """The stub reported a failure: Run calls UnInit (FLASH_CR locked again) and returns to the halt word.
        Best effort: the failure being reported matters more than a second problem found on the way; if Run
        does not return, the core is halted and FLASH_CR locked by the host."""
        try:
            self._wait_halted("Run", RETURN_TIMEOUT_S)
        except (StreamError, interrupt.Interrupted):  # the failure stays the news; the host locks instead
            self._give_up(error)

    def _give_up(self, error: BaseException) -> None:
        """The host stops using the stub because of `error`: core halted, FLASH_CR locked (StubCall.abandon);
        the stub must be loaded again before another batch."""
        self.loaded = False
        self.abandon(error)

    # --- the whole session -------------------------------------------------------------------------------
    def load(self) -> None:
        """Halt (IWDG frozen first), clear the reset flags, load the stub with its config word and the call
        block for Run in one transfer. Init runs at the start of every batch (Run)."""
        interrupt.check("before the flash stub was loaded: nothing was erased or programmed")
        self._started = self.now()
        target = self.target
        # A running IWDG must not count while the core is halted between calls (RM0090 38.16.4); the stub
        # refreshes it while it runs. Frozen *before* the halt: an application watchdog of a few ms would
        # otherwise expire between the halt and this write (a probe command takes about 1 ms).
        self.write32(DBGMCU_APB1_FZ, self.read32(DBGMCU_APB1_FZ) | DBGMCU_APB1_FZ_DBG_IWDG_STOP)
        if not self._link(target.is_halted):
            self._link(target.halt)
        # Clear the reset flags: any flag seen later is a reset during this stream.
        csr = self.read32(RCC_CSR)
        self.report.reset_flags_before = csr & RESET_FLAGS
        self.write32(RCC_CSR, csr | RCC_CSR_RMVF)
        self.thumb_known = False
        assert self.layout.load_address == self.layout.halt_address + 4  # one transfer for both
        self.write_words(self.layout.halt_address, [const("F4LOAD_HALT_WORD")] + le_words(self._patched_image()))
        self.loaded = True
        self._block_in_image = True
        self._fresh_load = True

    def _patched_image(self) -> bytes:
        """The stub's image with the config word and Run's call block in its PrgData."""
        image = bytearray(self.image.image + b"\x00" * (-len(self.image.image) % 4))
        struct.pack_into("<I", image, self.image.config_offset, self.config)
        block = self.call_block("Run", self._run_args())
        struct.pack_into(f"<{len(block)}I", image, self.image.call_offset, *block)
        return bytes(image)

    def _run_args(self) -> Tuple[int, int, int]:
        return self.queue, self.buffers[0], SRAM_BUFFERS

    def open_batch(self, operations: Sequence[Operation]) -> None:
        """Start one Run (Init, Stream, UnInit) on the loaded stub with `operations` queued: the queue in one
        transfer, then the call. More may follow (`append`) until `finish`."""
        assert self.loaded, "load() first"
        self._batch_started = self.now()
        self.commands = expand(operations, stop=False)
        self.published = self.queued = self.done = self.last_crc = 0
        self.started = False
        self.buffer_free_after = [0] * len(self.buffers)
        self.next_buffer = 0
        self.crc_check = None
        self.crc_results: Dict[int, int] = {}
        self.unread_crcs: Set[int] = set()
        self.current = self.commands[0].operation if self.commands else None
        interrupt.check(f"before {self.current}: nothing was done in this batch" if self.current else
                        "before the batch: nothing was done in it")
        if not self._fresh_load:  # else RCC_CSR was cleared a moment ago, and nothing ran since
            self._check_reset("before the stream")
        self._fresh_load = False
        try:
            self.write_words(self.queue, self._initial_queue())
            self.start_call("Run", self._run_args(), block_written=self._block_in_image)
            self._block_in_image = False
        except BaseException as error:
            self._give_up(error)
            raise

    def append(self, operations: Sequence[Operation]) -> List[int]:
        """Queue more operations in this batch (published as slots and buffers allow); the sequence numbers
        of their stub commands."""
        first = len(self.commands) + 1
        self.commands += expand(operations, stop=False)
        if self.current is None and first <= len(self.commands) and self.done == first - 1:
            self.current = self.commands[first - 1].operation  # the oldest operation not yet completed
        return list(range(first, len(self.commands) + 1))

    def pump(self, until: Callable[[], bool]) -> None:
        """Publish and follow the stub until `until()` (asked after every poll)."""
        self._guarded(lambda: self._pump(until))

    def finish(self) -> StreamReport:
        """STOP after the queued operations; wait for Run to return (FLASH_CR locked by its UnInit)."""
        self.commands.append(_Command(CMD_STOP, 0, 0, None))

        def rest() -> None:
            self._pump()
            self._read_crcs()
            self.report.crcs = [CrcResult(self.commands[seq - 1].address, self.commands[seq - 1].size, value)
                                for seq, value in sorted(self.crc_results.items())]
            code = self._wait_halted("Run", RETURN_TIMEOUT_S)
            if code:
                self._fail_after_return(code)
            self._check_reset("after STOP")
        self._guarded(rest)
        self.current = None
        if self.virtual is not None:
            self.report.virtual_seconds = self.virtual() - self._batch_started
        return self.report

    def _guarded(self, action: Callable[[], None]) -> None:
        """Run part of a batch; on the way out by an exception the stub is left as the exception requires."""
        try:
            action()
        except StreamCommandError as error:
            self._lock_after_failure(error)
            raise
        except BaseException as error:  # no progress, a lost link, the host's own exception, Ctrl-C
            if isinstance(error, (TargetResetError, LinkLostError)):
                self._locate(error)
            self._give_up(error)
            raise

    def _fail_after_return(self, code: int) -> None:
        """Run returned `code` after the stream stopped: UnInit's failure (BSY still set), or Init's when the
        stream never started (its record is in the stub's PrgData)."""
        record = self.error_record(self.layout.load_address + self.image.error_offset)
        raise StreamCommandError(code, record, None, 0)

    def batch(self, operations: Sequence[Operation]) -> StreamReport:
        """One Run on the loaded stub: Init, the queue, pipeline, STOP, UnInit, halted at the halt word with
        FLASH_CR locked. The stub stays loaded for another batch."""
        self.open_batch(operations)
        return self.finish()

    def unload(self) -> None:
        """Check that FLASH_CR is locked again (each Run ends with UnInit; the image stays in RAM, unused)."""
        self.current = None
        self.loaded = False
        try:
            locked = self.read32(FLASH_CR) & FLASH_CR_LOCK
        except BaseException as error:
            self.abandon(error)
            raise
        if not locked:
            raise StreamError("FLASH_CR is still unlocked after UnInit")

    def run(self, operations: Sequence[Operation]) -> StreamReport:
        """load, one batch, unload: the report's virtual time runs from the load to UnInit."""
        self.load()
        report = self.batch(operations)
        self.unload()
        if self.virtual is not None:
            report.virtual_seconds = self.virtual() - self._started
        return report


class StubRunner:
    """The stub loaded once, for several batches of operations (one Run call each: Init, Stream, UnInit).

    Use as a context manager (or `start()` / `close()`): entering freezes the IWDG, halts the core and loads
    the stub; `run(operations, progress=None)` streams one batch and returns its StreamReport (virtual time of
    that batch only); a batch can also be built while it runs: `open(operations, progress)`, then `append`,
    `pump(until)` and `finish()` (the program job, f4load.job). Each batch ends with FLASH_CR locked by the
    stub's UnInit; a clean exit checks FLASH_CR.LOCK. An exit by exception lets the exception through: a batch
    that broke (no progress, a lost link, Ctrl-C, an exception of `progress`) has already halted the core and
    locked FLASH_CR; a batch still open when the caller's own exception leaves is stopped after the command the
    stub is running (`abort`). Between batches the core is halted at the halt word and the host may use the
    target freely (read flash, plan), as long as it leaves the stub's RAM (`layout`) alone. Every batch first
    checks RCC_CSR: a reset since `start()` (which also loses the stub) is a TargetResetError.
    """

    def __init__(self, target: Any, image: StubImage, *, psize: int = protocol.PSIZE_X32, clock_mhz: int = 0,
                 iwdg: bool = True, ram_base: int = const("F4LOAD_RAM_BASE"),
                 stall_timeout_s: float = STALL_TIMEOUT_S) -> None:
        config = protocol.config_word(psize, clock_mhz, iwdg)
        self._stream = _Stream(target, image, config, ram_base, stall_timeout_s)
        self.reports: List[StreamReport] = []
        self._open = False

    @property
    def layout(self) -> Any:
        return self._stream.layout

    @property
    def stream(self) -> _Stream:
        """The stream of the open batch (buffers, CRC results, probe access): for f4load.job."""
        return self._stream

    @property
    def reset_flags_before(self) -> int:
        """RCC_CSR reset flags found (and cleared) when the stub was loaded."""
        return self._stream.report.reset_flags_before

    def start(self) -> StubRunner:
        self._stream.load()
        return self

    def run(self, operations: Sequence[Operation], progress: Optional[Progress] = None) -> StreamReport:
        self.open(operations, progress)
        return self.finish()

    def open(self, operations: Sequence[Operation], progress: Optional[Progress] = None) -> None:
        """Start a batch with `operations` queued; `progress(operation, nbytes)` as commands complete."""
        stream = self._stream
        stream.report = StreamReport(reset_flags_before=stream.report.reset_flags_before)
        stream.on_command = progress
        self._open = True
        try:
            stream.open_batch(operations)
        except BaseException:
            self._open = False
            stream.on_command = None
            raise

    def append(self, operations: Sequence[Operation]) -> List[int]:
        """More operations for the open batch; the sequence numbers of their stub commands."""
        assert self._open
        return self._stream.append(operations)

    def pump(self, until: Callable[[], bool]) -> None:
        """Follow the open batch (publishing what was appended) until `until()`."""
        assert self._open
        self._stream.pump(until)

    def finish(self) -> StreamReport:
        """End the open batch: STOP, Run returns with FLASH_CR locked; its report."""
        assert self._open
        try:
            report = self._stream.finish()
        finally:
            self._open = False
            self._stream.on_command = None
        self.reports.append(report)
        return report

    def abort(self) -> None:
        """The caller gives up on the open batch: the stub stops after the command it is running (the commands
        published behind it become STOP) and Run returns with FLASH_CR locked; if that does not happen, the core
        is halted and FLASH_CR locked by the host. Never raises."""
        self._open = False
        self._stream.on_command = None
        try:
            self._stream.stop_after_current()
        except BaseException as error:  # noqa: BLE001 - the caller's exception is the news
            self._stream._give_up(error)

    def close(self) -> None:
        if self._stream.loaded:
            self._stream.unload()

    def __enter__(self) -> StubRunner:
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        if self._open:
            if isinstance(exc, (LinkLostError, TargetResetError)) and not exc.located_by:
                self._stream._locate(exc)  # raised by the caller's own access to the stub's RAM
            if self._stream.loaded:
                self.abort()
            self._open = False
        self._stream.loaded = False
        if isinstance(exc, interrupt.Interrupted):
            self._stream.abandon(exc)  # checks that the core is halted and FLASH_CR locked, and says so


def run_stream(target: Any, image: StubImage, operations: Sequence[Operation], *,
               psize: int = protocol.PSIZE_X32, clock_mhz: int = 0, iwdg: bool = True,
               ram_base: int = const("F4LOAD_RAM_BASE"), stall_timeout_s: float = STALL_TIMEOUT_S,
               progress: Optional[Progress] = None) -> StreamReport:
    """Load the stub into RAM at `ram_base` and run `operations` through its streaming entry point.

    `psize`: FLASH_CR.PSIZE for the supply (protocol.psize_for_voltage). Returns a StreamReport; raises
    StreamCommandError (the stub refused or failed an operation), TargetResetError, LinkLostError or
    StreamError (the stub stopped answering). The target is left halted, with FLASH_CR locked on success.
    `progress(operation, nbytes)` is called as each command completes (see the module docstring).
    """
    config = protocol.config_word(psize, clock_mhz, iwdg)
    stream = _Stream(target, image, config, ram_base, stall_timeout_s)
    stream.on_command = progress
    return stream.run(operations)


def crc_map(report: StreamReport) -> Dict[Tuple[int, int], int]:
    """{(address, size): CRC} of a report's CRC results."""
    return {(c.address, c.size): c.value for c in report.crcs}
