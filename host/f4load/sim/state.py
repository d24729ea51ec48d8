"""Persistence of the virtual STM32F407: flash, option bytes, OTP, unique ID and faults in a state directory.

A real chip keeps its flash and option bytes when the debugger disconnects; so does the virtual one. The state
directory holds:

| file | contents |
|---|---|
| `state.json` | `{"format": 1, "unique_id": "<24 hex digits>"}`: format version and the 96-bit unique ID |
| `flash.bin` | the raw main flash array, 512 KB (xE) or 1 MB (xG), erased bytes are 0xFF |
| `options.json` | `OptionBytes.to_dict()` (flash.py): the OPTCR user bits and the OTP area |
| `faults.json` | `Faults.to_dict()` (faults.py): the injected faults that are not option bytes |
| `lock` | the pid of the process that holds the chip (fcntl lock; released when that process ends) |

The directory is `F4LOAD_SIM_STATE` when set, else `platformdirs.user_cache_dir("f4load")/sim`. An empty or
missing directory is a factory-new chip: erased flash, factory option bytes (0x0FFF_AAEC user bits: RDP level
0, no write protection, software watchdog, BOR off), erased OTP.

Named boards (`--probe sim:NAME`, several virtual boards at once) live in `boards/NAME/` inside that
directory, each a state directory of its own with its own unique ID (`board_dir`, `unique_id_for`).

Every file is written to a temporary name in the same directory and renamed over the old one (POSIX rename is
atomic), so a process killed in the middle of a save leaves each file either old or new, never half written.
Files are written in the order faults, options, flash, state.json.
A save that fails (a file cannot be written or renamed: directory removed, disk full, file too large) is
`SimStateError` naming the file; when the probe closes it is `SimSaveError`, an error of the session, never a
success (probe.py).

Only one process at a time may use a chip. `lock_state()` takes an exclusive `fcntl.flock` on `lock` and
keeps it until `release()` (or until the process ends: the kernel drops the lock of a dead process, so a
crashed session never leaves the chip locked). A second process gets `SimStateError("the virtual chip in DIR
is in use by pid N")`. `save_state` and the fault functions take the lock for the duration of their write
unless this process already holds it; a second `lock_state` session is refused even within one process.

Faults come from two places: `faults.json` (written by `f4load-sim fault` / `faults.inject`) and the
`F4LOAD_SIM_FAULTS` environment variable (the same text form, added on top when the state is loaded and never
written back). The option-byte faults (`wrp`, `rdp1`, `hw-watchdog`) are chip state: `inject` programs them
into the persisted option bytes, as if someone had written the option bytes, and they stay there until the
option bytes change again (by the virtual chip's flash interface, `clear`, or `reset_state`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Dict, Iterator, Optional, Union

from f4load import exit_status
from f4load import registers as reg
from f4load.errors import F4LoadError
from f4load.part import KB
from f4load.sim.faults import FAULTS_ENV, Faults, FaultSpecError, parse_fault_spec
from f4load.sim.flash import OptionBytes

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking (documented)
    fcntl = None  # type: ignore[assignment]

STATE_ENV = "F4LOAD_SIM_STATE"
FORMAT_VERSION = 1

STATE_FILE = "state.json"
FLASH_FILE = "flash.bin"
OPTIONS_FILE = "options.json"
FAULTS_FILE = "faults.json"
LOCK_FILE = "lock"
_TEMP_MARK = ".tmp-"

UNIQUE_ID_BYTES = 12
# The 96-bit unique ID at 0x1FFF_7A10 (part.UNIQUE_ID). Shaped like ST's (wafer X/Y coordinates, wafer number,
# ASCII lot number), but only its stability matters: a fixed value keeps runs repeatable.
DEFAULT_UNIQUE_ID = (bytes([0x35, 0x00, 0x1F, 0x00])  # Y = 0x0035, X = 0x001F
                     + bytes([0x07])                  # wafer 7
                     + b"F4SIM01"[::-1])               # lot number, most significant character last

# Named boards: `boards/NAME` inside the default board's state directory.
BOARDS_DIR = "boards"
BOARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")

PathLike = Union[str, "os.PathLike[str]"]


class SimStateError(F4LoadError):
    """The state directory cannot be used as it is. The message is one line and names the file.

    For `f4load` it is a failure of the (virtual) probe: exit status 3 (f4load.exit_status.PROBE)."""
    exit_code = exit_status.PROBE


class SimSaveError(SimStateError):
    """The chip's state could not be written when the probe closed (the directory was removed, the disk is
    full, a file cannot be replaced...): what the session did to the virtual flash and option bytes is lost,
    so the session did not succeed. Raised by the probe's close (sim/probe.py); deliberately not a pyocd error,
    which pyocd's `Session.close` would swallow."""


# ---------------------------------------------------------------------------------------------------------
@dataclass
class ChipState:
    """Everything about the virtual chip that outlives a session.

    `faults` are the effective faults: faults.json plus F4LOAD_SIM_FAULTS when loaded by `load_state`.
    `save_state` does not write them (faults change only through `faults.inject`/`clear`/`reset_state`), so a
    state built by `Chip.to_state()` can carry whatever faults the chip ran with.
    """
    flash: bytearray = field(default_factory=lambda: bytearray(b"\xff" * (Faults().flash_kb * KB)))
    options: OptionBytes = field(default_factory=OptionBytes)
    unique_id: bytes = DEFAULT_UNIQUE_ID
    faults: Faults = field(default_factory=Faults)

    @property
    def flash_kb(self) -> int:
        return len(self.flash) // KB

    @classmethod
    def factory_new(cls, faults: Optional[Faults] = None, unique_id: bytes = DEFAULT_UNIQUE_ID) -> ChipState:
        """An erased chip with factory option bytes, sized by `faults.flash_kb`."""
        faults = faults if faults is not None else Faults()
        return cls(flash=bytearray(b"\xff" * (faults.flash_kb * KB)), options=OptionBytes(),
                   unique_id=unique_id, faults=faults)


def state_dir(path: Optional[PathLike] = None) -> Path:
    """The state directory: `path`, else $F4LOAD_SIM_STATE, else the user cache directory."""
    if path is not None and str(path) != "":
        return Path(path).expanduser()
    env = os.environ.get(STATE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs  # imported here: only the default location needs it

    return Path(platformdirs.user_cache_dir("f4load")) / "sim"


def check_board_name(name: str) -> str:
    """`name` if it can name a virtual board (letters, digits, `_.-`, at most 32), else SimStateError."""
    if not BOARD_NAME.fullmatch(name):
        raise SimStateError(f"virtual board name {name!r}: use 1-32 letters, digits, '_', '.' or '-', "
                            "starting with a letter or digit")
    return name


def board_dir(name: Optional[str], path: Optional[PathLike] = None) -> Path:
    """The state directory of the virtual board `name` (`--probe sim:NAME`): `boards/NAME` inside the default
    board's directory (`state_dir(path)`); the default board's directory itself for None."""
    root = state_dir(path)
    return root if name is None else root / BOARDS_DIR / check_board_name(name)


def unique_id_for(directory: Path) -> bytes:
    """The unique ID a factory-new chip in `directory` gets: DEFAULT_UNIQUE_ID for the default board; for a
    named board one derived from its name (same X/Y/wafer/lot shape), so that boards differ and stay stable."""
    if directory.parent.name != BOARDS_DIR:
        return DEFAULT_UNIQUE_ID
    digest = hashlib.sha256(directory.name.encode("utf-8")).digest()
    return digest[:5] + b"F4BOARD"[::-1]


def _ensure_dir(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise SimStateError(f"state path {directory} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SimStateError(f"cannot create state directory {directory}: {_reason(exc)}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SimStateError(f"state directory {directory} is not writable")


def _reason(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


# ---------------------------------------------------------------------------------------------------------
# Option-byte faults: chip state, kept in the OPTCR user bits (RM0090 3.7.1).

RDP_LEVEL1_VALUE = 0x55  # any RDP byte other than 0xAA (level 0) and 0xCC (level 2) is level 1


def program_option_faults(options: OptionBytes, faults: Faults) -> None:
    """Program the option-byte faults of `faults` into `options`: clear nWRP bits, set RDP level 1, clear
    WDG_SW. Only adds protection; what `faults` does not ask for is left as it is. Idempotent."""
    optcr = options.optcr
    for sector in faults.write_protected:
        optcr &= ~(1 << (reg.FLASH_OPTCR_NWRP_SHIFT + sector))
    if faults.rdp_level1 and (optcr & reg.FLASH_OPTCR_RDP_MASK) >> reg.FLASH_OPTCR_RDP_SHIFT == reg.RDP_LEVEL0:
        optcr = (optcr & ~reg.FLASH_OPTCR_RDP_MASK) | (RDP_LEVEL1_VALUE << reg.FLASH_OPTCR_RDP_SHIFT)
    if faults.hardware_watchdog:
        optcr &= ~reg.FLASH_OPTCR_WDG_SW
    options.optcr = optcr


def unprogram_option_faults(options: OptionBytes) -> None:
    """Undo every option-byte fault: all nWRP bits 1, RDP 0xAA (level 0), WDG_SW 1. BOR and nRST_* stay."""
    optcr = options.optcr | reg.FLASH_OPTCR_NWRP_MASK | reg.FLASH_OPTCR_WDG_SW
    options.optcr = (optcr & ~reg.FLASH_OPTCR_RDP_MASK) | (reg.RDP_LEVEL0 << reg.FLASH_OPTCR_RDP_SHIFT)


def option_faults_of(options: OptionBytes) -> Faults:
    """The option-byte faults that `options` shows (for display): WRP sectors, RDP level 1, WDG_SW=0."""
    return Faults(write_protected=list(options.write_protected_sectors), rdp_level1=options.rdp_level == 1,
                  hardware_watchdog=options.hardware_watchdog)


# ---------------------------------------------------------------------------------------------------------
# Locking.

@dataclass
class _Hold:
    """This process's flock on one state directory: the open lock file and who uses it."""
    handle: IO[str]
    count: int = 0  # StateLock objects holding it (sessions and short writes)
    session: bool = False  # a `lock_state` session holds it


class StateLock:
    """Use of one state directory by this process (see the module docstring).

    A session lock (`lock_state`) is exclusive, also within the process: a second session on the same chip is
    refused, as a board has one probe. A write lock (save_state, inject, ...) nests inside the session that
    holds the chip, so the holder can save.
    """

    _holds: Dict[Path, _Hold] = {}  # resolved directory -> this process's hold, shared by every instance

    def __init__(self, directory: Path, session: bool = False) -> None:
        self.directory = directory
        self.session = session
        self._key = directory.resolve()
        self.held = False

    def acquire(self) -> StateLock:
        if self.held:
            return self
        hold = StateLock._holds.get(self._key)
        if hold is None:
            hold = StateLock._holds[self._key] = _Hold(self._lock_file())
        elif self.session and hold.session:
            raise SimStateError(f"the virtual chip in {self.directory} is in use by pid {os.getpid()} "
                                f"(this process: close the other session first)")
        hold.count += 1
        hold.session = hold.session or self.session
        self.held = True
        return self

    def _lock_file(self) -> IO[str]:
        """Open the lock file and flock it; the kernel drops the flock when the process ends."""
        _ensure_dir(self.directory)
        lock_path = self.directory / LOCK_FILE
        try:
            handle = open(lock_path, "a+")  # noqa: SIM115 - kept open while the lock is held
        except OSError as exc:
            raise SimStateError(f"cannot open lock file {lock_path}: {_reason(exc)}") from None
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                owner = handle.read().strip()
                handle.close()
                who = f"pid {owner}" if owner.isdigit() else "another process"
                raise SimStateError(f"the virtual chip in {self.directory} is in use by {who}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        hold = StateLock._holds[self._key]
        hold.count -= 1
        if self.session:
            hold.session = False
        if hold.count == 0:
            del StateLock._holds[self._key]
            # The pid stays in the file; it is only read when flock fails, i.e. while a holder exists.
            if fcntl is not None:
                fcntl.flock(hold.handle.fileno(), fcntl.LOCK_UN)
            hold.handle.close()

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def lock_state(path: Optional[PathLike] = None) -> StateLock:
    """Take the chip in the state directory for a session; `release()` it when the session ends.

    Raises SimStateError("the virtual chip in DIR is in use by pid N") when another process, or another
    session of this process, holds it. The holder can load_state/save_state/inject while it holds the chip.
    """
    return StateLock(state_dir(path), session=True).acquire()


# ---------------------------------------------------------------------------------------------------------
# Reading.

def _read_json(file: Path) -> Any:
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SimStateError(f"cannot read {file}: {_reason(exc)}") from None
    except UnicodeDecodeError:
        raise SimStateError(f"{file} is corrupted (not UTF-8 text)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        what = "truncated" if exc.pos >= len(text.rstrip()) else "corrupted"
        raise SimStateError(f"{file} is {what}: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def read_stored_faults(path: Optional[PathLike] = None) -> Faults:
    """The faults in faults.json alone (no environment), or no faults when there is no faults.json."""
    file = state_dir(path) / FAULTS_FILE
    if not file.exists():
        return Faults()
    data = _read_json(file)
    try:
        return Faults.from_dict(data)
    except FaultSpecError as exc:
        raise SimStateError(f"{file}: {exc}") from None
    except TypeError as exc:
        raise SimStateError(f"{file} is corrupted: {exc}") from None


def environment_faults(base: Optional[Faults] = None) -> Faults:
    """`base` with F4LOAD_SIM_FAULTS added (unchanged when the variable is unset or empty)."""
    base = base if base is not None else Faults()
    text = os.environ.get(FAULTS_ENV, "")
    if not text.strip():
        return base
    try:
        return parse_fault_spec(text, base)
    except FaultSpecError as exc:
        raise SimStateError(f"{FAULTS_ENV}: {exc}") from None


def _read_unique_id(file: Path) -> bytes:
    meta = _read_json(file)
    if not isinstance(meta, dict) or "format" not in meta:
        raise SimStateError(f"{file} is corrupted: no format version")
    if meta["format"] != FORMAT_VERSION:
        raise SimStateError(f"{file}: state format version {meta['format']!r} is not supported "
                            f"(this f4load reads version {FORMAT_VERSION}); run `f4load-sim reset`")
    text = meta.get("unique_id", DEFAULT_UNIQUE_ID.hex())
    if not isinstance(text, str) or not re.fullmatch(f"[0-9a-fA-F]{{{2 * UNIQUE_ID_BYTES}}}", text):
        raise SimStateError(f"{file} is corrupted: unique_id must be {2 * UNIQUE_ID_BYTES} hex digits")
    return bytes.fromhex(text)


def _read_options(file: Path) -> OptionBytes:
    data = _read_json(file)
    if not isinstance(data, dict):
        raise SimStateError(f"{file} is corrupted: not a JSON object")
    try:
        return OptionBytes.from_dict(data)
    except KeyError as exc:
        raise SimStateError(f"{file} is corrupted: no {exc.args[0]!r}") from None
    except (ValueError, TypeError) as exc:
        raise SimStateError(f"{file} is corrupted: {exc}") from None


def _read_flash(file: Path, flash_kb: int) -> bytearray:
    try:
        data = bytearray(file.read_bytes())
    except OSError as exc:
        raise SimStateError(f"cannot read {file}: {_reason(exc)}") from None
    if len(data) not in (512 * KB, 1024 * KB):
        raise SimStateError(f"{file} is {len(data)} bytes; a flash image must be 524288 (512 KB) "
                            f"or 1048576 (1 MB) bytes")
    wanted = flash_kb * KB
    # A different size only happens when F4LOAD_SIM_FAULTS overrides flash=: the same image in a part of
    # the other size (cut off, or padded with erased bytes).
    if len(data) > wanted:
        del data[wanted:]
    elif len(data) < wanted:
        data.extend(b"\xff" * (wanted - len(data)))
    return data


def load_state(path: Optional[PathLike] = None, *, use_environment: bool = True) -> ChipState:
    """Read the chip in the state directory; a factory-new chip when the directory is empty or missing.

    The directory is created if missing. Faults are faults.json plus F4LOAD_SIM_FAULTS (unless
    `use_environment` is False). Raises SimStateError (one line) for anything unusable.
    """
    directory = state_dir(path)
    _ensure_dir(directory)
    faults = read_stored_faults(directory)
    if use_environment:
        faults = environment_faults(faults)
    state_file, flash_file, options_file = (directory / STATE_FILE, directory / FLASH_FILE,
                                            directory / OPTIONS_FILE)
    if not state_file.exists():
        present = [f.name for f in (flash_file, options_file) if f.exists()]
        if present:
            raise SimStateError(f"{directory} is incomplete: {', '.join(present)} without {STATE_FILE}; "
                                f"run `f4load-sim reset`")
        fresh = ChipState.factory_new(faults, unique_id_for(directory))
        program_option_faults(fresh.options, faults)
        return fresh
    unique_id = _read_unique_id(state_file)
    for needed in (flash_file, options_file):
        if not needed.exists():
            raise SimStateError(f"{directory} is incomplete: {needed.name} is missing; run `f4load-sim reset`")
    options = _read_options(options_file)
    flash = _read_flash(flash_file, faults.flash_kb)
    program_option_faults(options, faults)
    return ChipState(flash=flash, options=options, unique_id=unique_id, faults=faults)


# ---------------------------------------------------------------------------------------------------------
# Writing.

def _write_atomic(file: Path, data: bytes) -> None:
    """Write `data` to `file` so that `file` is always either the old or the new content."""
    temp = file.with_name(f".{file.name}{_TEMP_MARK}{os.getpid()}")
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, file)
    except OSError as exc:
        try:
            temp.unlink()
        except OSError:
            pass
        raise SimStateError(f"cannot write {file}: {_reason(exc)}") from None


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _remove_stale_temporaries(directory: Path) -> None:
    """Temporary files left by a process killed during a save (only called with the lock held)."""
    for stale in _temporaries(directory):
        try:
            stale.unlink()
        except OSError:
            pass


def _temporaries(directory: Path) -> Iterator[Path]:
    return (p for p in directory.glob(f".*{_TEMP_MARK}*") if p.is_file())


def _write_faults(directory: Path, faults: Faults) -> None:
    # faults.json holds only what is not chip state; option-byte faults live in options.json.
    _write_atomic(directory / FAULTS_FILE, _json_bytes(faults.without_option_byte_faults().to_dict()))


def _write_chip(directory: Path, state: ChipState) -> None:
    if len(state.flash) not in (512 * KB, 1024 * KB):
        raise SimStateError(f"cannot save a flash image of {len(state.flash)} bytes (512 KB or 1 MB only)")
    if len(state.unique_id) != UNIQUE_ID_BYTES:
        raise SimStateError(f"cannot save a unique ID of {len(state.unique_id)} bytes (needs {UNIQUE_ID_BYTES})")
    _write_atomic(directory / OPTIONS_FILE, _json_bytes(state.options.to_dict()))
    _write_atomic(directory / FLASH_FILE, bytes(state.flash))
    _write_atomic(directory / STATE_FILE, _json_bytes({"format": FORMAT_VERSION,
                                                       "unique_id": bytes(state.unique_id).hex()}))


def save_state(state: ChipState, path: Optional[PathLike] = None) -> None:
    """Persist the chip's flash, option bytes, OTP and unique ID (not its faults: see ChipState).

    Takes the lock for the write unless this process already holds it; raises SimStateError when another
    process holds the chip or a file cannot be written.
    """
    directory = state_dir(path)
    with StateLock(directory):
        _remove_stale_temporaries(directory)
        _write_chip(directory, state)


def save_faults(faults: Faults, path: Optional[PathLike] = None) -> None:
    """Replace faults.json (the option-byte faults are not stored there: see `faults.inject`)."""
    faults.validate()
    directory = state_dir(path)
    with StateLock(directory):
        _write_faults(directory, faults)


def reset_state(path: Optional[PathLike] = None, faults: Optional[Faults] = None) -> ChipState:
    """Make the directory hold a factory-new chip (erased, factory option bytes, no faults unless given).

    Files in the directory that are not part of the state are left alone.
    """
    directory = state_dir(path)
    faults = (faults if faults is not None else Faults()).validate()
    state = ChipState.factory_new(faults, unique_id_for(directory))
    with StateLock(directory):
        _remove_stale_temporaries(directory)
        _write_faults(directory, faults)
        _write_chip(directory, state)
    return state


# ---------------------------------------------------------------------------------------------------------
# Fault injection into a state directory (the API behind `f4load-sim fault`; also `faults.inject`/`clear`).

def _resize(flash: bytearray, flash_kb: int) -> None:
    """Fit the image to a part of `flash_kb` KB: cut off, or extended with erased bytes."""
    wanted = flash_kb * KB
    if len(flash) > wanted:
        del flash[wanted:]
    else:
        flash.extend(b"\xff" * (wanted - len(flash)))


def inject_faults(path: Optional[PathLike], spec: Union[str, Faults]) -> Faults:
    """Add faults to the chip in the state directory and return its stored faults afterwards.

    `spec` is the text form (`"wrp=0-3 iwdg=5ms"`) or a Faults whose non-default fields are added. Option-byte
    faults (wrp, rdp1, hw-watchdog) are programmed into options.json; the rest go to faults.json. `flash=`
    changes the part: the image is cut or extended with erased bytes. F4LOAD_SIM_FAULTS is not involved.
    Raises FaultSpecError for a bad spec, SimStateError for a bad state directory or a chip in use.
    """
    directory = state_dir(path)
    with StateLock(directory):
        state = load_state(directory, use_environment=False)
        stored = state.faults
        if isinstance(spec, Faults):
            new = stored.merged(spec.validate()).validate()
        else:
            new = parse_fault_spec(spec, stored)
        program_option_faults(state.options, new)
        _resize(state.flash, new.flash_kb)
        _remove_stale_temporaries(directory)
        _write_faults(directory, new)
        _write_chip(directory, state)
    return new.without_option_byte_faults().merged(option_faults_of(state.options))


def clear_faults(path: Optional[PathLike] = None) -> None:
    """Remove every injected fault: faults.json back to none (the flash size is kept: it is the part, not a
    malfunction) and the option bytes' WRP, RDP and WDG_SW back to factory values. Flash content is kept."""
    directory = state_dir(path)
    with StateLock(directory):
        state = load_state(directory, use_environment=False)
        unprogram_option_faults(state.options)
        _remove_stale_temporaries(directory)
        _write_faults(directory, Faults(flash_kb=state.faults.flash_kb))
        _write_chip(directory, state)


# ---------------------------------------------------------------------------------------------------------
# What the last debugger session left behind.
#
# A real board stays powered when the probe lets go: its core stays halted (or running) and FLASH_CR stays
# locked or unlocked as the host left it, until the next reset. The virtual chip is powered on afresh by every
# session, so the state the last host left is recorded when the probe closes (`last-session.json`) for
# `f4load-sim status` and for tests ("did f4load leave FLASH_CR locked after Ctrl-C?").

LAST_SESSION_FILE = "last-session.json"


def save_last_session(record: Dict[str, Any], path: Optional[PathLike] = None) -> None:
    """Write the record of how the last session left the chip (`SimProbe.close`); SimStateError on failure."""
    directory = state_dir(path)
    with StateLock(directory):
        _write_atomic(directory / LAST_SESSION_FILE, _json_bytes(record))


def read_last_session(path: Optional[PathLike] = None) -> Optional[Dict[str, Any]]:
    """The record of how the last session left the chip, or None when no session has ended here yet.
    Keys: `pid`, `virtual_s`, `core` ("halted", "running", "locked up", "sleeping", "in reset"),
    `flash_cr`, `flash_sr`, `flash_cr_locked`."""
    file = state_dir(path) / LAST_SESSION_FILE
    if not file.exists():
        return None
    data = _read_json(file)
    if not isinstance(data, dict):
        raise SimStateError(f"{file} is corrupted: not a JSON object")
    return data
