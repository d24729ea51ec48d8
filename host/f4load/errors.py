"""f4load's error types: one base (`F4LoadError`), the session family, and what the RAM stub reports.

Every failure f4load reports to its user as a short message (no traceback) is an `F4LoadError`:
`ImageError` (f4load.image) for a file it will not program, the `SessionError` family below for what happens
on the target (each with the command line's exit status, docs/cli.md), and `StubError` for a failure the RAM
stub reports.

Stub errors
-----------

A stub entry point returns 0 or a result code (layout in stub/f4load_protocol.h, words in
`f4load.protocol.describe_result`); after a failure its error record (`struct f4load_error`) holds the
failing address and the raw FLASH_SR/CR. `StubError` carries those facts as fields - operation, kind,
sector, FLASH_SR bits, address - and its text is made from them here, in one place, the way probe-rs'
`FlashError` variants carry `sector_address`/`page_address` (../shared/STYLE.md).

Users of the stub turn a code into words with `describe(code, record)`; the pyocd integration
(`f4load.pyocd_targets`) raises pyocd's own FlashEraseFailure/FlashProgramFailure with `str(StubError)`
as the message and the StubError as the cause, so pyocd's flow and error handling stay as they are.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from f4load import exit_status, part, protocol
from f4load.protocol import ErrorRecord, ResultCode

# Operations (the OP field) that erase or program, for callers that map a code onto their own error types.
ERASE_OPERATIONS = frozenset(protocol.const(n) for n in ("F4LOAD_OP_ERASE_SECTOR", "F4LOAD_OP_ERASE_CHIP"))
PROGRAM_OPERATIONS = frozenset({protocol.const("F4LOAD_OP_PROGRAM")})


def describe(code: int, record: Optional[ErrorRecord] = None, address: Optional[int] = None) -> str:
    """Any stub result code in words; `record` (the error record read after the failure) adds the failing
    address and the raw registers, `address` names the address the host asked for when there is no record."""
    if code == protocol.const("F4LOAD_RESULT_OK"):
        return protocol.describe_result(code)
    text = protocol.describe_result(code, record)
    if record is None and address is not None:
        text += f"\n  requested address {address:#010x}"
    if record is not None and record.stale_sr and not ResultCode.decode(code).stale:
        # Flags found (and cleared) by an earlier call since Init - usually Init itself - are not in this
        # code's STALE bit but may explain the state the application left the flash interface in.
        names = ", ".join(protocol.sr_bit_names(record.stale_sr))
        text += (f"\n  note: error flags left set by the application or an earlier failure ({names}) were "
                 "found and cleared earlier in this session")
    return text


class F4LoadError(Exception):
    """Base of every error f4load reports to its user as one line (no traceback). `exit_code` is the
    command line's exit status for it (f4load.exit_status, docs/cli.md)."""
    exit_code = exit_status.FLASH


class DeclinedError(F4LoadError):
    """The user answered no at a prompt (e.g. `rdp 0`'s mass erase): nothing was done."""
    exit_code = exit_status.DECLINED


# --- the session family: one class per kind of failure, each with the exit status the command line uses ----

class SessionError(F4LoadError):
    """A failure of the session step, reported as one line (or a few, for flash errors). `exit_code` is the
    command line's exit status for this class of failure (docs/cli.md)."""
    exit_code = exit_status.FLASH


class UsageError(SessionError):
    """The request does not fit the detected target (a sector it does not have, a range outside memory)."""
    exit_code = exit_status.USAGE


class ConnectError(SessionError):
    """No probe, no target, or the probe/target refused the connection."""
    exit_code = exit_status.PROBE


class TargetIdentityError(SessionError):
    """The target is not an STM32F405/407/415/417 (DBGMCU_IDCODE, F_SIZE)."""
    exit_code = exit_status.PROBE


class ProtectionError(SessionError):
    """Read-out or write protection forbids the request (found before anything was erased)."""
    exit_code = exit_status.FLASH


class OptionBytesError(SessionError):
    """Option-byte programming failed or did not take (f4load.option_bytes)."""
    exit_code = exit_status.FLASH


class LinkError(SessionError):
    """The probe lost the target, or the target reset, while f4load was working on it."""
    exit_code = exit_status.LINK


class VerifyError(SessionError):
    """The flash does not hold what it should. `mismatches`: (address, size, expected CRC, actual CRC)."""
    exit_code = exit_status.VERIFY

    def __init__(self, message: str, mismatches: Sequence[Tuple[int, int, int, int]] = ()) -> None:
        self.mismatches = list(mismatches)
        super().__init__(message)


# --- what the stub reports -----------------------------------------------------------------------------------

class StubError(F4LoadError):
    """A failure reported by the RAM stub: the result code taken apart, plus the error record if read.

    Fields: `code` (the raw result code), `operation` (the entry point, e.g. "EraseSector"), `kind` (e.g.
    "FLASH_ERROR"), `sector` (0..11 or None), `sector_address`, `sr_bits` (FLASH_SR error bits in the code)
    and `sr_names` (e.g. ["WRPERR"]), `stale` (error flags were already set before the operation),
    `address` (the failing address: the record's, else the requested one), `record` (or None).
    """

    def __init__(self, code: int, record: Optional[ErrorRecord] = None, address: Optional[int] = None) -> None:
        self.code = code
        self.exit_code = exit_status.VERIFY if self.kind_is_verify(code) else exit_status.FLASH
        self.record = record
        self.result = ResultCode.decode(code)
        self.address = record.address if record is not None else address
        super().__init__(describe(code, record, address))

    @staticmethod
    def kind_is_verify(code: int) -> bool:
        return protocol.KIND_NAMES.get(ResultCode.decode(code).kind) == "VERIFY_MISMATCH"

    @property
    def operation(self) -> str:
        return protocol.OP_FUNCTIONS.get(self.result.op, f"operation {self.result.op}")

    @property
    def kind(self) -> str:
        return protocol.KIND_NAMES.get(self.result.kind, f"kind {self.result.kind}")

    @property
    def sector(self) -> Optional[int]:
        return self.result.sector

    @property
    def sector_address(self) -> Optional[int]:
        """Start address of the sector the code names (None when no single sector applies)."""
        if self.sector is None:
            return None
        sectors = part.sectors_for(1024 * part.KB)
        return sectors[self.sector].start if self.sector < len(sectors) else None

    @property
    def sr_bits(self) -> int:
        return self.result.sr_bits

    @property
    def sr_names(self) -> List[str]:
        return protocol.sr_bit_names(self.result.sr_bits)

    @property
    def stale(self) -> bool:
        return self.result.stale

    @property
    def is_erase(self) -> bool:
        return self.result.op in ERASE_OPERATIONS

    @property
    def is_program(self) -> bool:
        return self.result.op in PROGRAM_OPERATIONS

    def __repr__(self) -> str:
        where = f", sector={self.sector}" if self.sector is not None else ""
        at = f", address={self.address:#010x}" if self.address is not None else ""
        return f"StubError({self.code:#010x}: {self.operation} {self.kind}{where}{at}, sr={self.sr_names})"
