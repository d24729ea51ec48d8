"""f4load for Python scripts: program, verify and erase in one call each, with results that print in one line.

    import f4load

    result = f4load.program("app.hex", probe="sim")     # probe: "auto" (default), "sim", "sim:NAME", a uid
    print(result)              # [virtual STM32F407 (sim)] STM32F407VE 35001f00...: erased 48 KB (sectors 0-2), ...
    result.unique_id           # "35001f000731304d49533446" (the chip's 96-bit unique ID, hex)
    result.outcome.erased      # the sectors erased (f4load.session.Outcome)

Every failure is an `f4load.F4LoadError` subclass whose `exit_code` is the command line's exit status for it
(f4load.exit_status), so a script can report exactly what the command line would. For more than one operation
per connection, open a `f4load.Session` (docs/api.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

from f4load.identity import TargetInfo
from f4load.image import Image, load_image, load_images
from f4load.probes import ProbeInfo, attached, describe_all
from f4load.session import Outcome, Progress, Session

Source = Union[str, "os.PathLike[str]", Image, Sequence[Union[str, "os.PathLike[str]"]]]


@dataclass
class Result:
    """What one call did to one board. `str(result)` is one line; the details are in `outcome` and `info`."""
    probe: str               # how reports name the probe: "virtual STM32F407 (sim)", or product and unique ID
    probe_uid: Optional[str]
    info: TargetInfo = field(repr=False)
    outcome: Outcome

    @property
    def unique_id(self) -> str:
        """The chip's 96-bit unique ID as 24 hex digits (its serial number, for a production log)."""
        return self.info.unique_id

    @property
    def part(self) -> str:
        return self.info.part.name

    def __str__(self) -> str:
        return f"[{self.probe}] {self.part} {self.unique_id}: {self.outcome}"


def image_of(source: Source, address: Optional[int] = None, format: Optional[str] = None) -> Image:
    """An Image from a file name (`app.bin@0x08008000` places a raw binary), several file names, or an Image."""
    if isinstance(source, Image):
        return source
    if isinstance(source, (str, Path, os.PathLike)):
        return load_image(os.fspath(source), format=format, address=address) if address is not None \
            else load_images([os.fspath(source)], format=format)
    return load_images([os.fspath(item) for item in source], format=format, address=address)


def _session(probe: Optional[str], options: Any) -> Session:
    return Session(probe=probe, **options)


def _result(session: Session, outcome: Outcome) -> Result:
    assert session.info is not None
    return Result(session.probe_label, session.probe_uid, session.info, outcome)


def program(source: Source, probe: Optional[str] = None, *, address: Optional[int] = None,
            format: Optional[str] = None, keep: bool = True, verify: bool = True,
            progress: Optional[Progress] = None, **session_options: Any) -> Result:
    """Program `source` (a file name, several, or an Image) into the board on `probe` (default: $F4LOAD_PROBE,
    else the one probe attached) exactly as `f4load FILE` does: the files are checked before the probe is
    opened, unchanged sectors are skipped, the bytes around the image kept, the result verified by CRC.
    `session_options` go to `Session` (connect, reset_run, vdd, frequency, sim_link, backup_dir, keep_backup)."""
    image = image_of(source, address, format)
    with _session(probe, session_options) as session:
        return _result(session, session.program(image, keep=keep, verify=verify, progress=progress))


def verify(source: Source, probe: Optional[str] = None, *, address: Optional[int] = None,
           format: Optional[str] = None, **session_options: Any) -> Result:
    """Check that the board holds `source` (CRC per sector on the target); VerifyError when it does not."""
    image = image_of(source, address, format)
    with _session(probe, session_options) as session:
        return _result(session, session.verify(image))


def erase(sectors: Optional[Sequence[int]] = None, probe: Optional[str] = None, *, force: bool = False,
          progress: Optional[Progress] = None, **session_options: Any) -> Result:
    """Erase these sectors (None: every sector of the part); blank ones are skipped unless `force`."""
    with _session(probe, session_options) as session:
        assert session.info is not None
        chosen = list(range(len(session.info.part.sectors))) if sectors is None else list(sectors)
        return _result(session, session.erase(chosen, force=force, progress=progress))


def list_probes() -> List[ProbeInfo]:
    """The real debug probes attached (uid, vendor, product). The virtual chip is "sim", never listed."""
    return describe_all(attached())
