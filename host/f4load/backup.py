"""The backup file of the bytes a program keeps around the image.

Between a sector's erase and the end of its programming, the bytes `program` keeps around the image
(calibration values, a serial number...) exist only in the stub's RAM and the host: a USB drop, a power cut or
Ctrl-C in that window could lose them for good. The stub copies them into its buffers on the target and the host
reads them out of RAM (f4load.job); before a sector's erase is queued, its kept bytes are in a **backup file**:
Intel HEX (bincopy), one record run per kept range, named `<unique ID>-<date>-<time>.hex` in the user cache
directory (`platformdirs.user_cache_dir("f4load")/backups`, or `$F4LOAD_BACKUP_DIR`), flushed to disk, and
rewritten whole (a new file renamed over it) when the next sector's kept bytes join it. It is the
input format f4load programs, so `f4load <backup>.hex` puts the kept bytes back (the planner keeps whatever
else the sector holds). When the work fails, the error carries the path (`backup_of(error)`) and the command
line prints the restore command; after a successful verify the file is removed (unless `keep_backup`; with
`verify=False` it is kept, since nothing checked the result).
"""
from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

import bincopy
import platformdirs

BACKUP_DIR_ENV = "F4LOAD_BACKUP_DIR"
BACKUP_ATTRIBUTE = "f4load_backup"


def backup_directory() -> Path:
    """Where backups of kept bytes go: $F4LOAD_BACKUP_DIR, else the user cache directory's `backups`."""
    given = os.environ.get(BACKUP_DIR_ENV)
    return Path(given) if given else Path(platformdirs.user_cache_dir("f4load")) / "backups"


def write_backup(directory: Path, unique_id: str, ranges: Sequence[Tuple[int, bytes]]) -> Path:
    """Write (address, bytes) ranges as Intel HEX to a new file `<unique ID>-<YYYYmmdd-HHMMSS>[-n].hex` in
    `directory`, flushed to the disk before returning (it must survive what comes next)."""
    records = bincopy.BinFile()
    for address, data in ranges:
        records.add_binary(data, address=address)
    text = records.as_ihex()
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{unique_id}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in itertools.count():
        path = directory / (f"{stem}.hex" if n == 0 else f"{stem}-{n}.hex")
        try:
            with open(path, "x", encoding="ascii") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")


def rewrite_backup(path: Path, ranges: Sequence[Tuple[int, bytes]]) -> None:
    """Write (address, bytes) ranges as Intel HEX over the backup file at `path`: a new file beside it, synced,
    then renamed over it (POSIX rename is atomic: the file is always the old one or the new one, whole)."""
    records = bincopy.BinFile()
    for address, data in ranges:
        records.add_binary(data, address=address)
    temporary = path.with_name(path.name + ".new")
    with open(temporary, "w", encoding="ascii") as handle:
        handle.write(records.as_ihex())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def backup_of(error: BaseException) -> Optional[Path]:
    """The backup file of the kept bytes a failed `Session.program` left, if it wrote one."""
    path = getattr(error, BACKUP_ATTRIBUTE, None)
    return path if isinstance(path, Path) else None


def restore_hint(path: Path) -> str:
    """What to tell the user about a backup left by a failed program."""
    return (f"the bytes kept around the image were saved to {path} before their sectors' erase; restore them with "
            f"`f4load {path}`, then program the file again")
