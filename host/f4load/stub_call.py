"""Calling the RAM stub's entry points through pyocd, and telling a lost link from a reset target.

The stub is a CMSIS-style flash algorithm (stub/f4load_protocol.h, "Entry points"). A debugger that sets the
arguments, SP, LR, xPSR and PC register by register pays two or three probe round trips per register (pyocd:
22 probe commands for the seven), and as many again to read r0. `StubCall` instead writes the stub's call block
(`struct f4load_call` in its PrgData: entry point, arguments, SP, return address) in one transfer, sets PC to
the stub's `Call` trampoline (and xPSR.T on the first call after a load), resumes with one DHCSR write, waits
for the halt at the halt word and reads the result and the trampoline's "returned" mark from the block: about
eight probe commands per call. It also owns the two things every probe access after that needs:

- the link's failures made explicit: any pyocd exception becomes a `StreamError` that says what happened,
  after DHCSR and RCC_CSR were read for evidence of a reset (`TargetResetError`) or a lost probe
  (`LinkLostError`);
- the way out of a broken stream: `halt_and_lock()` stops the core wherever it is and locks FLASH_CR, so an
  interrupted host never leaves a running stub with the flash unlocked behind it.

f4load.stream builds the streaming session on top of it (its `_Stream` is a `StubCall`).
"""
from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence

from pyocd.core import exceptions as pyocd_errors

from f4load import interrupt
from f4load.errors import StubError
from f4load.protocol import ErrorRecord, const, ffi
from f4load.registers import (
    DHCSR,
    DHCSR_C_DEBUGEN,
    DHCSR_DBGKEY,
    DHCSR_S_HALT,
    DHCSR_S_LOCKUP,
    DHCSR_S_RESET_ST,
    FLASH_CR,
    FLASH_CR_LOCK,
    FLASH_SR,
    FLASH_SR_BSY,
    RCC_CSR,
    RESET_FLAG_NAMES,
    RESET_FLAGS,
    XPSR_THUMB,
)
from f4load.stub_image import StubImage

if TYPE_CHECKING:
    from f4load.stream import Operation

# CMSIS `fnc` argument of Init/UnInit (stub/f4load_protocol.h, Init). f4load erases and programs in the same
# session; "program" unlocks FLASH_CR like "erase" does ("verify" does not).
FNC_PROGRAM = const("F4LOAD_FNC_PROGRAM")

# How long an entry point may run before the host gives up on it; stream.py sets it from the stub's own
# timeouts (Init and UnInit wait for BSY as long as the stub's longest timeout).
DEFAULT_CALL_TIMEOUT_S = 10.0
# Ctrl-C while an entry point runs: how long it may still take to return before the core is halted where it is
# (the longest a single flash operation takes: a 128 KB sector erase, DS8626 Table 40, 4 s maximum at x8).
INTERRUPT_GRACE_S = 5.0
# While waiting for an entry point to return, RCC_CSR is read every this many DHCSR polls.
RCC_CHECK_EVERY = 8
# struct f4load_call (stub/f4load_protocol.h): the words the host writes, and where Call leaves the result.
CALL_RETURNED = const("F4LOAD_CALL_RETURNED")
CALL_WORDS = ffi.sizeof("struct f4load_call") // 4
OFFSET_CALL_RESULT = ffi.offsetof("struct f4load_call", "result")
assert ffi.offsetof("struct f4load_call", "state") == OFFSET_CALL_RESULT + 4  # one read takes both


# --- errors ---------------------------------------------------------------------------------------------

class StreamError(Exception):
    """The stream did not complete. Subclasses say why; `request` is the host's operation in progress (None
    before the first or after the last)."""

    def __init__(self, message: str, request: Optional[Operation] = None) -> None:
        self.request = request
        # Set by the stream after a reset or a lost link (f4load.stream, `_locate`): the operation really in
        # progress, how that is known ("the stub's own record", "the host's last poll"), and what the flash
        # holds now (f4load.flash_state).
        self.in_progress: Optional[Operation] = None
        self.located_by = ""
        self.flash_after = ""
        self.base_message = message
        super().__init__(message + (f" (during: {request})" if request is not None else ""))


class StreamCommandError(StubError, StreamError):
    """The stub reported a failure for one command: a StubError (result code, error record, `operation` =
    the stub's name for what failed, `sector`, `sr_names`, `address`) that also carries `request`, the
    host's operation (e.g. EraseSector(5)), and `seq`, the command's sequence number (0: an entry-point
    call outside the stream, Init or UnInit)."""

    def __init__(self, code: int, record: Optional[ErrorRecord], request: Optional[Operation], seq: int) -> None:
        super().__init__(code, record)
        self.request = request
        self.seq = seq
        if seq:
            self.args = (f"{self.args[0]}\n  stream command {seq}: {request}",)


class TargetResetError(StreamError):
    """The target reset (or stopped running the stub) during the stream: nothing after the last completed
    command can be trusted. `reset_flags` are the RCC_CSR flags seen (0 if the reset was seen another way)."""

    def __init__(self, message: str, request: Optional[Operation], reset_flags: int = 0,
                 dhcsr: Optional[int] = None) -> None:
        self.reset_flags = reset_flags
        self.dhcsr = dhcsr
        names = [name for bit, name in sorted(RESET_FLAG_NAMES.items(), reverse=True) if reset_flags & bit]
        if names:
            message += f"; RCC_CSR reset flags: {', '.join(names)}"
        super().__init__(message, request)

    @property
    def reset_seen(self) -> bool:
        """The chip really reset (a reset flag, DHCSR.S_RESET_ST, or debug disabled by a power-on reset), as
        opposed to a core that locked up or halted outside the stub without a reset."""
        if self.reset_flags:
            return True
        return self.dhcsr is not None and bool(self.dhcsr & DHCSR_S_RESET_ST or not self.dhcsr & DHCSR_C_DEBUGEN)


class CoreLockupError(TargetResetError):
    """The core locked up (DHCSR.S_LOCKUP, ARMv7-M B1.5.15) while it ran the stub: a fault the stub could not
    handle. No reset happened: the host halts the core and locks FLASH_CR."""


class LinkLostError(StreamError):
    """The probe lost the target (disconnect, or a transfer the probe could not complete)."""


def _virtual_clock(target: Any) -> Optional[Callable[[], float]]:
    """Seconds of virtual time when `target` is the virtual chip (session.probe.clock), else None."""
    probe = getattr(getattr(target, "session", None), "probe", None)
    clock = getattr(probe, "clock", None) if probe is not None else None
    if clock is None or not hasattr(clock, "seconds"):
        return None
    return lambda: float(clock.seconds)


class StubCall:
    """The stub's image at `ram_base` on one target: probe access, entry-point calls, reset detection.

    `target` is anything with pyocd's Target methods used here (`halt`, `resume`, `is_halted`, `read32`,
    `write32`, `read_memory_block32`, `write_memory_block32`, `read_core_register`,
    `write_core_registers_raw`). On the virtual chip `now()` is virtual time."""

    def __init__(self, target: Any, image: StubImage, ram_base: int,
                 call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S) -> None:
        self.target = target
        self.image = image
        self.layout = image.layout(ram_base)
        self.call_timeout_s = call_timeout_s
        virtual = _virtual_clock(target)
        self.now: Callable[[], float] = virtual if virtual is not None else time.monotonic
        self.virtual = virtual
        self.current: Optional[Operation] = None  # the oldest operation not yet completed by the stub
        self._classifying = False
        self.call_address = self.layout.load_address + image.call_offset
        # xPSR.T is written with PC on the first call after a load: after a reset the core's T bit is whatever
        # bit 0 of the application's reset vector was (ARMv7-M B1.5.5); after a call it stays set.
        self.thumb_known = False

    # --- probe access with the link's failures made explicit -------------------------------------------
    def _link(self, action: Callable[[], Any]) -> Any:
        """Run one pyocd access; a pyocd exception becomes a StreamError that says what happened.

        pyocd's own exceptions hide the cause: after a reset mid-stream the next register access fails with
        CoreRegisterAccessError ("core is not halted") or a transfer fails. So before reporting, DHCSR and
        RCC_CSR are read (raw, once) for evidence of a reset: TargetResetError if there is any, else
        LinkLostError for a failed transfer or a lost probe, TargetResetError (core not in the state the
        host left it in) for anything else pyocd refused."""
        try:
            return action()
        except pyocd_errors.ProbeDisconnected as error:
            raise LinkLostError(f"the probe disconnected: {error}", self.current) from error
        except pyocd_errors.Error as error:
            raise self._classify(error) from error

    def _classify(self, error: Exception) -> StreamError:
        if self._classifying:  # a failure while looking for evidence: no evidence
            return LinkLostError(f"a probe access failed: {error}", self.current)
        self._classifying = True
        try:
            dhcsr = int(self.target.read32(DHCSR))
            flags = int(self.target.read32(RCC_CSR)) & RESET_FLAGS
        except pyocd_errors.Error:
            dhcsr, flags = None, 0
        finally:
            self._classifying = False
        what = f"{type(error).__name__}: {error}"
        if flags or (dhcsr is not None and (dhcsr & DHCSR_S_RESET_ST or not dhcsr & DHCSR_C_DEBUGEN)):
            return TargetResetError(f"the target reset during the stream (pyocd: {what})", self.current,
                                    flags, dhcsr)
        if dhcsr is None or isinstance(error, (pyocd_errors.TransferError, pyocd_errors.ProbeError)):
            return LinkLostError(f"a probe access failed ({what})", self.current)
        state = "locked up" if dhcsr & DHCSR_S_LOCKUP else "halted" if dhcsr & DHCSR_S_HALT else "running"
        return TargetResetError(f"the core is not in the state the host left it in (pyocd: {what}; core "
                                f"{state}, DHCSR {dhcsr:#010x})", self.current, 0, dhcsr)

    def read32(self, address: int) -> int:
        return int(self._link(lambda: self.target.read32(address)))

    def write32(self, address: int, value: int) -> None:
        self._link(lambda: self.target.write32(address, value))

    def read_words(self, address: int, count: int) -> List[int]:
        return [int(w) for w in self._link(lambda: self.target.read_memory_block32(address, count))]

    def write_words(self, address: int, words: Sequence[int]) -> None:
        self._link(lambda: self.target.write_memory_block32(address, list(words)))

    # --- calling an entry point (halted core) ------------------------------------------------------------
    def call_block(self, name: str, args: Sequence[int]) -> List[int]:
        """The words of struct f4load_call for `name(*args)`: entry, r0-r2, SP, return address, result and state
        cleared."""
        assert len(args) <= 3, "the stub's entry points take at most three arguments"
        entry = self.image.entry_address(self.layout.load_address, name) | 1
        return [entry, *args, *[0] * (3 - len(args)), self.layout.stack_top, self.layout.halt_address | 1, 0, 0]

    def start_call(self, name: str, args: Sequence[int] = (), block_written: bool = False) -> None:
        """Start `name(*args)` on the halted core through the stub's Call trampoline: the call block (unless
        the caller wrote it already, e.g. with the image), PC (and xPSR.T the first time), one DHCSR write."""
        if not block_written:
            self.write_words(self.call_address, self.call_block(name, args))
        names, values = ["pc"], [self.image.entry_address(self.layout.load_address, "Call")]
        if not self.thumb_known:
            names, values = ["xpsr", "pc"], [XPSR_THUMB, values[0]]
        self._link(lambda: self.target.write_core_registers_raw(names, values))
        self.thumb_known = True
        # Resume: C_DEBUGEN with C_HALT clear (ARMv7-M C1.6.2). pyocd's own resume reads DHCSR and clears DFSR
        # first (two more round trips) for its halt-reason bookkeeping, which f4load does not use.
        self.write32(DHCSR, DHCSR_DBGKEY | DHCSR_C_DEBUGEN)

    def _wait_halted(self, what: str, timeout_s: float) -> int:
        """Wait until the core halts at the halt word (the entry point returned through Call); the entry
        point's result. DHCSR is read on every poll, RCC_CSR every RCC_CHECK_EVERY: a reset (S_RESET_ST, debug
        disabled by a power-on, a reset flag), a lockup (S_LOCKUP) or a lost link ends the wait at once with
        its own error. After Ctrl-C the entry point gets INTERRUPT_GRACE_S to return (a second signal: none),
        then Interrupted is raised. Call marks the block "returned" right before it jumps to the halt word, so
        a halted core with that mark is at the halt word; without it the core stopped elsewhere."""
        deadline = self.now() + timeout_s
        grace: Optional[float] = None
        polls = 0
        while True:
            dhcsr = self.read32(DHCSR)
            if dhcsr & DHCSR_S_HALT:
                break
            if dhcsr & DHCSR_S_RESET_ST or not dhcsr & DHCSR_C_DEBUGEN:
                raise TargetResetError(f"the target reset while {what} ran (DHCSR {dhcsr:#010x})", self.current,
                                       self._reset_flags(), dhcsr)
            if dhcsr & DHCSR_S_LOCKUP:
                self._check_reset(f"core locked up in {what}")
                raise CoreLockupError(f"the core locked up while it ran the stub's {what} (DHCSR.S_LOCKUP): "
                                      "a fault the stub could not handle", self.current, 0, dhcsr)
            polls += 1
            if polls % RCC_CHECK_EVERY == 0:
                self._check_reset(f"while {what} ran")
            now = self.now()
            name = interrupt.requested()
            if name is not None:
                grace = now + INTERRUPT_GRACE_S if grace is None else grace
                if interrupt.insisted() or now > grace:
                    raise interrupt.Interrupted(f"{what} did not return; halted the core in it", signal_name=name)
            if now > deadline:
                self._check_reset(f"{what} did not return")
                raise StreamError(f"{what} did not return within {timeout_s:g} s", self.current)
        result, state = self.read_words(self.call_address + OFFSET_CALL_RESULT, 2)
        if state != CALL_RETURNED:
            pc = int(self._link(lambda: self.target.read_core_register("pc")))
            self._check_reset(f"{what} stopped at {pc:#010x}, not at the halt word")
            raise StreamError(f"{what} stopped at {pc:#010x} instead of returning to the halt word "
                              f"{self.layout.halt_address:#010x}", self.current)
        return result

    def call(self, name: str, *args: int) -> int:
        """Run an entry point to completion on the halted core; its result (r0)."""
        self.start_call(name, args)
        return self._wait_halted(name, self.call_timeout_s)

    def error_record(self, address: int) -> ErrorRecord:
        words = self.read_words(address, ErrorRecord.SIZE // 4)
        return ErrorRecord.from_bytes(struct.pack(f"<{len(words)}I", *words))

    def _call_checked(self, name: str, *args: int) -> None:
        code = self.call(name, *args)
        if code:
            record = self.error_record(self.layout.load_address + self.image.error_offset)
            raise StreamCommandError(code, record, self.current, 0)

    # --- reset detection ---------------------------------------------------------------------------------
    def _reset_flags(self) -> int:
        return self.read32(RCC_CSR) & RESET_FLAGS

    def _check_reset(self, context: str) -> None:
        flags = self._reset_flags()
        if flags:
            raise TargetResetError(f"the target reset during the stream ({context})", self.current, flags)

    # --- the way out of a broken stream ------------------------------------------------------------------
    def halt_and_lock(self) -> Optional[str]:
        """Stop the core wherever it is (inside Stream, Init or UnInit) and lock FLASH_CR behind it.

        Used when the host gives up on a running stub (no progress, Ctrl-C, an exception of its own): the
        stub must not go on erasing, nor leave FLASH_CR unlocked for whatever runs next. The stub's UnInit is
        not called: it is the code that was just abandoned. Writing LOCK (RM0090 3.9.7) also clears
        PG/SER/MER/STRT; while BSY=1 a FLASH_CR write stalls the bus until the operation ends (digest, "Rules
        that matter"), so then CR is left alone. Returns None when FLASH_CR is locked, else why it is not
        (for the message of the error being reported). Never raises for a probe failure."""
        try:
            self._link(self.target.halt)
            if self.read32(FLASH_SR) & FLASH_SR_BSY:
                return ("FLASH_CR was left unlocked: FLASH_SR.BSY is still set, and a write to FLASH_CR "
                        "would stall until it clears; reset the target")
            self.write32(FLASH_CR, FLASH_CR_LOCK)
            if not self.read32(FLASH_CR) & FLASH_CR_LOCK:
                return "FLASH_CR is still unlocked after writing LOCK; reset the target"
            return None
        except StreamError as error:
            return f"could not halt the core and lock FLASH_CR ({error}); reset the target"

    def abandon(self, error: BaseException) -> None:
        """`error` broke a call or stream: `halt_and_lock()`, and add what it could not do to `error`.

        Not after a real reset (`TargetResetError.reset_seen`): the reset already stopped the stub and
        locked FLASH_CR (reset value 0x8000_0000, RM0090 3.9.7), and the core now runs the application."""
        if isinstance(error, TargetResetError) and error.reset_seen:
            return
        note = self.halt_and_lock()
        if isinstance(error, interrupt.Interrupted):
            error.add_detail(note or "the core is halted and FLASH_CR locked")
            return
        if note is None:
            return
        if isinstance(error, StreamError) and error.args and isinstance(error.args[0], str):
            error.args = (f"{error.args[0]}; {note}",) + tuple(error.args[1:])
        elif hasattr(error, "add_note"):  # Python 3.11+: shown under the traceback (e.g. of a Ctrl-C)
            error.add_note(note)
