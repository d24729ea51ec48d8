"""The per-chip run journal: what happened the last times f4load worked on this chip.

A board that "sometimes" fails to erase leaves no trail: the next run connects under reset, which clears the
evidence a debugger could read (the application runs, RCC_CSR flags get cleared, FLASH_SR resets). So every
run of `Session.program`, `erase`, `verify` and the diagnose trial erase appends one line to the chip's journal:
when, which command, the outcome, the operation and sector in progress when it failed, the FLASH_SR bits, the
RCC_CSR reset flags and their cause (f4load.reset_causes), the parallelism and VDD. `f4load diagnose` reads it
("the last 3 runs were cut by a brown-out during the erase of sector 2") and weighs it in its verdict.

Where: one JSON Lines file per chip, named by its 96-bit unique ID, in `platformdirs.user_data_dir("f4load")/
journal`, or `$F4LOAD_JOURNAL_DIR`. Bounded: the oldest lines are dropped beyond MAX_ENTRIES. A journal that
cannot be written or read is logged and ignored: it must never make a run fail.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import platformdirs

from f4load import reset_causes

LOG = logging.getLogger(__name__)

JOURNAL_ENV = "F4LOAD_JOURNAL_DIR"
MAX_ENTRIES = 100

# Outcomes. The first group are failures the board caused or suffered; the others are not about the board.
OK = "ok"
RESET, LOCKUP, LINK_LOST = "reset", "lockup", "link lost"
FLASH_ERROR, VERIFY_MISMATCH = "flash error", "verify mismatch"
INTERRUPTED, REFUSED, ERROR = "interrupted", "refused", "error"
BOARD_FAILURES = (RESET, LOCKUP, LINK_LOST, FLASH_ERROR, VERIFY_MISMATCH)
# Stub result kinds that are the flash interface failing (the others: a request or a part f4load cannot serve).
FLASH_KINDS = ("FLASH_ERROR", "BSY_TIMEOUT", "LOCKED")


@dataclass
class Entry:
    """One run. `operation` is e.g. "erase sector 2", `kind` "erase"/"program"/"crc", `reset_cause` a
    reset_causes key; fields that do not apply are None/empty."""
    time: str
    command: str
    outcome: str
    operation: Optional[str] = None
    kind: Optional[str] = None
    sector: Optional[int] = None
    sr_bits: List[str] = field(default_factory=list)
    reset_flags: Optional[int] = None
    reset_cause: Optional[str] = None
    psize: Optional[str] = None
    vdd: Optional[float] = None
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome in BOARD_FAILURES

    def what_happened(self) -> str:
        """What happened, to follow "the last run was": "cut by a brown-out during the erase of sector 2",
        "stopped by FLASH_SR WRPERR during the erase of sector 0"."""
        where = ""
        if self.kind in ("erase", "program") and self.sector is not None:
            where = f" during the {self.kind} of sector {self.sector}"
        elif self.operation:
            where = f" during {self.operation}"
        if self.outcome == RESET:
            cause = reset_causes.classify(self.reset_flags or 0)
            if cause.supply:
                return f"cut by a {cause.name}{where}"
            return f"cut by a reset ({cause.name}){where}"
        if self.outcome == LOCKUP:
            return f"stopped by a core lockup{where}"
        if self.outcome == LINK_LOST:
            return f"cut by a lost link{where}"
        if self.outcome == FLASH_ERROR:
            if "BSY" in self.sr_bits:
                return f"stuck with FLASH_SR.BSY set{where}"
            bits = ", ".join(self.sr_bits)
            return f"stopped by {'FLASH_SR ' + bits if bits else 'a flash error'}{where}"
        if self.outcome == VERIFY_MISMATCH:
            return "rejected by its verify (the flash differs from the image)"
        return self.outcome

    def as_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> Entry:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def journal_directory() -> Path:
    """$F4LOAD_JOURNAL_DIR, else the user data directory's `journal`."""
    given = os.environ.get(JOURNAL_ENV)
    return Path(given) if given else Path(platformdirs.user_data_dir("f4load")) / "journal"


def now_text() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


class Journal:
    """The journal of the chip with `unique_id` (module docstring)."""

    def __init__(self, unique_id: Union[bytes, str], directory: Optional[Path] = None) -> None:
        key = unique_id.hex() if isinstance(unique_id, bytes) else unique_id.lower()
        self.path = (directory if directory is not None else journal_directory()) / f"{key}.jsonl"

    def entries(self) -> List[Entry]:
        """Every entry, oldest first; unreadable lines are skipped."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as error:
            LOG.warning("cannot read the run journal %s: %s", self.path, error)
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(Entry.from_json(json.loads(line)))
            except (ValueError, TypeError):
                continue
        return out

    def record(self, entry: Entry) -> None:
        """Append `entry`, dropping the oldest beyond MAX_ENTRIES. Never raises for a file problem."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry.as_json(), sort_keys=True) + "\n")
            lines = self.path.read_text(encoding="utf-8").splitlines()
            if len(lines) > MAX_ENTRIES:
                temp = self.path.with_name(self.path.name + f".tmp-{os.getpid()}")
                temp.write_text("\n".join(lines[-MAX_ENTRIES:]) + "\n", encoding="utf-8")
                os.replace(temp, self.path)
        except OSError as error:
            LOG.warning("cannot write the run journal %s: %s", self.path, error)

    def recent_failures(self) -> List[Entry]:
        """The board failures since the last run that succeeded, oldest first (interrupted and refused runs
        say nothing about the board and are passed over)."""
        out: List[Entry] = []
        for entry in reversed(self.entries()):
            if entry.outcome == OK:
                break
            if entry.failed:
                out.append(entry)
        return list(reversed(out))


def entry_for(command: str, error: Optional[BaseException], psize: Optional[str] = None,
              vdd: Optional[float] = None) -> Entry:
    """The journal entry of a run of `command` that ended with `error` (None: it succeeded). The session's
    errors are looked through to the stream's (their `__cause__`), which carry the facts."""
    from f4load import interrupt, stream
    from f4load.errors import ProtectionError, StubError, UsageError, VerifyError

    entry = Entry(time=now_text(), command=command, outcome=OK, psize=psize, vdd=vdd)
    if error is None:
        return entry
    entry.message = str(error).splitlines()[0] if str(error) else type(error).__name__
    cause = error.__cause__ if isinstance(error.__cause__, stream.StreamError) else error
    if isinstance(cause, stream.StreamError) and not isinstance(cause, StubError):
        operation = cause.in_progress if cause.in_progress is not None else cause.request
        entry.operation = str(operation) if operation is not None else None
        entry.kind = _kind(operation)
        entry.sector = stream.sector_of(operation)
    if isinstance(error, interrupt.Interrupted):
        entry.outcome = INTERRUPTED
    elif isinstance(cause, stream.TargetResetError):
        entry.outcome = RESET if cause.reset_seen else LOCKUP
        entry.reset_flags = cause.reset_flags
        entry.reset_cause = reset_causes.classify(cause.reset_flags).key if cause.reset_seen else None
    elif isinstance(cause, stream.LinkLostError):
        entry.outcome = LINK_LOST
    elif isinstance(error, StubError):
        entry.outcome = (VERIFY_MISMATCH if error.kind == "VERIFY_MISMATCH" else
                         FLASH_ERROR if error.kind in FLASH_KINDS else ERROR)
        request = getattr(error, "request", None)
        entry.operation = str(request) if request is not None else error.operation
        entry.kind = "erase" if error.is_erase else "program" if error.is_program else _kind(request)
        entry.sector = error.sector
        entry.sr_bits = list(error.sr_names)
        if error.kind == "BSY_TIMEOUT":
            entry.sr_bits.append("BSY")
    elif isinstance(error, VerifyError):
        entry.outcome = VERIFY_MISMATCH
    elif isinstance(error, (ProtectionError, UsageError)):
        entry.outcome = REFUSED
    else:
        entry.outcome = ERROR
    return entry


def _kind(operation: object) -> Optional[str]:
    from f4load import stream

    if isinstance(operation, stream.EraseSector):
        return "erase"
    if isinstance(operation, stream.Program):
        return "program"
    if isinstance(operation, stream.Crc):
        return "crc"
    return None
