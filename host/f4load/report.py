"""What a finished f4load command tells its user: the `--json` report and the human summary.

One `Report` per command run, filled as the command goes (the file, the target, the outcome, or the error), then
rendered either as one JSON object (`as_json()`, for machines: every field always present, null when it does not
apply) or as text (`info_lines()`, `summary()`: the final line says what was erased, programmed and skipped, and
how long it took).

Time: on the virtual chip (`--probe sim`) the report gives the **virtual** time of the flash work and its ratio to
the **physical floor**: the least time the flash itself needs for what was done, from DS8626 Table 40 typical
values (16 us per program write of the chosen width, 0.25/0.55/1.0 s per 16/64/128 KB sector erase at x32,
slower at x16/x8). Erases and programs cannot overlap on this single-bank flash (RM0090 3.5), so the floor is their
sum; a ratio of 1.1 means the tool and its link added 10 % on top of what the silicon needs. On real hardware
only the wall-clock time is known.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from f4load import __version__
from f4load.backup import backup_of, restore_hint
from f4load.errors import StubError
from f4load.floor import floor_seconds
from f4load.identity import TargetInfo, describe_jep106
from f4load.image import Image
from f4load.part import KB
from f4load.plan import Action
from f4load.session import Outcome

REPORT_FORMAT = 1
# Below this floor the summary gives no ratio to it: the time is then mostly the link and the stub's setup
# (tens of probe commands, a few ms each), and a ratio of hundreds would misread as a slow flash.
MEANINGFUL_FLOOR_S = 0.050
OPTION_COMMANDS = ("protect", "unprotect", "rdp", "option-bytes")


@dataclass
class Report:
    """Everything one command did, for `--json` and for the summary line."""
    command: str
    file: Optional[str] = None
    files: Optional[List[str]] = None  # the file arguments as given (FILE[@ADDRESS])
    image: Optional[Image] = None
    info: Optional[TargetInfo] = None
    outcome: Optional[Outcome] = None
    error: Optional[BaseException] = None
    exit_code: int = 0
    wall_seconds: float = 0.0
    session_virtual_seconds: Optional[float] = None  # virtual time from connect to the end of the work
    probe_commands: Optional[int] = None
    details: Dict[str, Any] = field(default_factory=dict)  # command-specific facts (read: address, length)
    text_lines: List[str] = field(default_factory=list)  # a command's own text output (diagnose's checklist)
    probe_requested: Optional[str] = None  # the --probe value this run used (auto, sim:a, a uid)
    probe_uid: Optional[str] = None  # the opened probe's unique ID
    probe_label: Optional[str] = None  # "virtual STM32F407 (sim)", or the probe's product and unique ID
    error_override: Optional[Dict[str, Any]] = None  # the error, for a failure before any command ran

    # --- derived -------------------------------------------------------------------------------------------
    @property
    def floor_seconds(self) -> Optional[float]:
        if self.outcome is None or self.info is None:
            return None
        return floor_seconds(self.outcome.erased, self.outcome.program_writes, self.info.psize)

    @property
    def ratio_to_floor(self) -> Optional[float]:
        floor = self.floor_seconds
        virtual = self.outcome.virtual_seconds if self.outcome is not None else None
        if floor is None or virtual is None or floor <= 0:
            return None
        return virtual / floor

    # --- JSON ----------------------------------------------------------------------------------------------
    def as_json(self) -> Dict[str, Any]:
        outcome = self.outcome
        ok = self.error is None and self.error_override is None and self.exit_code == 0
        return {
            "f4load": __version__,
            "format": REPORT_FORMAT,
            "command": self.command,
            "result": "ok" if ok else "failed",
            "exit_code": self.exit_code,
            "error": self.error_override if self.error_override is not None else _error_json(self.error),
            "summary": self.summary() if self.error is None and self.error_override is None else None,
            "probe": {"requested": self.probe_requested, "uid": self.probe_uid, "description": self.probe_label},
            "file": _image_json(self.file, self.image),
            "files": self.files,
            "target": _target_json(self.info),
            "sectors": _sectors_json(outcome),
            "erased_sectors": [s.index for s in outcome.erased] if outcome else [],
            "skipped_sectors": [s.index for s in outcome.skipped] if outcome else [],
            "bytes_erased": outcome.bytes_erased if outcome else 0,
            "bytes_programmed": outcome.bytes_programmed if outcome else 0,
            "bytes_skipped": outcome.bytes_skipped if outcome else 0,
            "bytes_kept": outcome.bytes_kept if outcome else 0,
            "program_writes": outcome.program_writes if outcome else 0,
            "verified": outcome.verified if outcome else None,
            "backup": str(outcome.backup) if outcome is not None and outcome.backup is not None else None,
            "time": {
                "wall_s": _round(self.wall_seconds),
                "work_wall_s": _round(outcome.wall_seconds) if outcome else None,
                "work_virtual_s": _round(outcome.virtual_seconds) if outcome else None,
                "session_virtual_s": _round(self.session_virtual_seconds),
                "floor_s": _round(self.floor_seconds),
                "ratio_to_floor": _round(self.ratio_to_floor, 3),
            },
            "probe_commands": self.probe_commands,
            "details": self.details,
        }

    def to_json_text(self) -> str:
        return json.dumps(self.as_json(), indent=2, sort_keys=False)

    # --- text ----------------------------------------------------------------------------------------------
    def summary_line(self) -> str:
        """The final line of a successful command, naming the probe: "[virtual STM32F407 (sim)] app.bin -> ..."."""
        return f"[{self.probe_label}] {self.summary()}" if self.probe_label else self.summary()

    def summary(self) -> str:
        """What a successful command did, in one line (without the probe)."""
        outcome = self.outcome
        parts: List[str] = []
        if self.command == "program" and outcome is not None:
            parts.append(_work_text(outcome, self._target_name()))
            parts.append("verified by CRC" if outcome.verified else "not verified (--no-verify)")
            if outcome.backup is not None:
                parts.append(f"kept bytes backed up in {outcome.backup}")
        elif self.command == "erase" and outcome is not None:
            if outcome.erased:
                text = f"erased {_sectors_text(outcome.erased)}"
                if outcome.skipped:
                    text += f", skipped {_sectors_text(outcome.skipped)}: already blank"
            else:
                text = f"nothing to erase: {_sectors_text(outcome.skipped)} already blank"
            parts.append(text)
        elif self.command == "verify" and outcome is not None:
            size = self.image.size if self.image is not None else 0
            parts.append(f"verified {size:,} bytes of {self.file} by CRC: the flash matches")
        elif self.command == "read":
            parts.append(f"read {self.details.get('length', 0):,} bytes at {self.details.get('address', 0):#010x} "
                         f"into {self.details.get('out')}")
        elif self.command == "info":
            parts.append("target identified")
        elif self.command in OPTION_COMMANDS:
            changed = self.details.get("changed")
            parts.append(f"option bytes changed: {', '.join(changed)}" if changed else
                         "option bytes unchanged: they already hold that")
            after = self.details.get("after")
            if after:
                parts.append(f"FLASH_OPTCR {after['optcr']:#010x}")
        elif self.command == "diagnose":
            verdict = self.details.get("diagnosis", {}).get("verdict")
            parts.append(f"diagnosis done: {verdict}" if verdict else "diagnosis done")
        elif self.command == "reset":
            if self.details.get("halted"):
                pc = self.details.get("pc")
                parts.append(f"reset {self._target_name()}; the core is halted at its reset vector"
                             + (f" (PC {pc:#010x})" if isinstance(pc, int) else ""))
            else:
                parts.append(f"reset {self._target_name()}; the application is running")
        parts.extend(self._time_texts())
        return "; ".join(p for p in parts if p)

    def _target_name(self) -> str:
        return self.info.part.name if self.info is not None else "target"

    def _time_texts(self) -> List[str]:
        out: List[str] = []
        outcome = self.outcome
        if outcome is not None and outcome.virtual_seconds is not None:
            out.append(_virtual_time_text(outcome.virtual_seconds, self.floor_seconds or 0.0))
        if self.probe_commands is not None:
            out.append(f"{self.probe_commands:,} probe commands")
        out.append(f"{self.wall_seconds:.2f} s")
        return out

    def info_lines(self) -> List[str]:
        """The `info` command's output: part, identity, flash, unique ID, option bytes, supply."""
        info = self.info
        if info is None:
            return []
        part, options = info.part, info.options
        rev = f"revision {info.rev_name}" if info.rev_name else "unknown revision"
        protected = options.write_protected(part)
        lines = [
            f"probe        {info.probe}",
            f"part         {part.name} (DEV_ID {info.dev_id:#05x}: STM32F405/407/415/417)",
            f"identity     DBGMCU_IDCODE {info.idcode:#010x}: DEV_ID {info.dev_id:#05x}, REV_ID {info.rev_id:#06x} "
            f"({rev})",
            f"debug ROM    {describe_jep106(info.rom_designer)}",
            f"flash        {part.flash_size // KB} KB, sectors 0-{len(part.sectors) - 1} "
            f"({_layout_text(part.sectors)})",
            f"unique ID    {info.unique_id}",
            f"option bytes FLASH_OPTCR {options.optcr:#010x}",
            f"  RDP        level {options.rdp_level} ({options.rdp:#04x})",
            f"  nWRP       {options.nwrp:#05x}: "
            + (f"sectors {', '.join(map(str, protected))} write-protected" if protected else "no sector protected"),
            "  WDG_SW     " + ("1: software watchdog (the IWDG runs only if the application starts it)"
                                if options.software_watchdog else
                                "0: hardware watchdog (the IWDG starts at every reset)"),
            f"  BOR_LEV    {options.bor_level:#04b}: {options.bor_name}",
            f"  nRST_STOP  {'0: reset on entering Stop' if options.reset_on_stop else '1: no reset on Stop'}; "
            f"nRST_STDBY {'0: reset on entering Standby' if options.reset_on_standby else '1: no reset on Standby'}",
            f"supply       {info.vdd:.2f} V ({_vdd_source_text(info.vdd_source)}) -> {info.psize_name} parallelism "
            f"(RM0090 Table 13)",
        ]
        lines += [f"warning      {w}" for w in info.warnings]
        return lines


def _virtual_time_text(virtual: float, floor: float) -> str:
    """The virtual time of the work and, when the floor is large enough to mean something (MEANINGFUL_FLOOR_S),
    its ratio to the floor. Below that the time is the link and the stub's load and setup, not the flash: a
    ratio of hundreds would say nothing about the tool."""
    if floor <= 0:
        return f"virtual time {virtual:.3f} s (no erase or program: floor 0)"
    if floor < MEANINGFUL_FLOOR_S:
        return f"virtual time {virtual:.3f} s (floor {_short_seconds(floor)}: time is link/setup overhead)"
    return f"virtual time {virtual:.3f} s = {virtual / floor:.2f} x the physical floor {floor:.3f} s"


def _short_seconds(seconds: float) -> str:
    """"0.34 ms", "12 ms", "1.250 s"."""
    if seconds < 0.01:
        return f"{seconds * 1e3:.2g} ms" if seconds >= 1e-3 else f"{seconds * 1e3:.2f} ms"
    if seconds < 1.0:
        return f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.3f} s"


def _layout_text(sectors: List[Any]) -> str:
    runs: List[List[int]] = []
    for s in sectors:
        if runs and runs[-1][1] == s.size:
            runs[-1][0] += 1
        else:
            runs.append([1, s.size])
    return " + ".join(f"{n} x {size // KB} KB" for n, size in runs)


def _vdd_source_text(source: str) -> str:
    return {"probe": "measured by the probe", "given": "given with --vdd",
            "assumed": "assumed: the probe does not measure VDD"}.get(source, source)


def _work_text(outcome: Outcome, target: str) -> str:
    """"app.bin -> STM32F407VE: erased 48 KB (sectors 0, 1, 2), programmed 40,000 bytes, skipped 16 KB (sector
    3) (unchanged)"; parts that did not happen are left out rather than shown as 0 KB."""
    plan = outcome.plan
    source = plan.source if plan is not None else "image"
    parts: List[str] = []
    if outcome.erased:
        parts.append(f"erased {_sectors_text(outcome.erased)}")
    if outcome.bytes_programmed:
        parts.append(f"programmed {outcome.bytes_programmed:,} bytes"
                     + ("" if outcome.erased else " into blank flash (no erase)"))
    if outcome.skipped:
        if parts:
            parts.append(f"skipped {_sectors_text(outcome.skipped)} (unchanged)")
        else:
            parts.append(f"nothing to change: {_sectors_text(outcome.skipped)} already "
                         f"hold{'s' if len(outcome.skipped) == 1 else ''} the image")
    if outcome.bytes_kept:
        parts.append(f"kept {outcome.bytes_kept:,} bytes around the image")
    return f"{source} -> {target}: {', '.join(parts) or 'nothing to do'}"


def _sectors_text(sectors: List[Any]) -> str:
    """"48 KB (sectors 0, 1, 2)", or "0 KB"."""
    if not sectors:
        return "0 KB"
    size = sum(s.size for s in sectors)
    noun = "sector" if len(sectors) == 1 else "sectors"
    return f"{size // KB} KB ({noun} {', '.join(str(s.index) for s in sectors)})"


def _round(value: Optional[float], digits: int = 6) -> Optional[float]:
    return None if value is None else round(value, digits)


def _error_json(error: Optional[BaseException]) -> Optional[Dict[str, Any]]:
    if error is None:
        return None
    out: Dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, StubError):
        out.update({"operation": error.operation, "kind": error.kind, "code": error.code,
                    "sector": error.sector, "address": error.address, "flash_sr_bits": error.sr_names,
                    "stale": error.stale})
    backup = backup_of(error)
    if backup is not None:
        out.update({"backup": str(backup), "restore": f"f4load {backup}", "backup_note": restore_hint(backup)})
    mismatches = getattr(error, "mismatches", None)
    if mismatches:
        out["mismatches"] = [{"address": a, "size": size, "expected_crc": e, "actual_crc": c}
                             for a, size, e, c in mismatches]
    return out


def _image_json(path: Optional[str], image: Optional[Image]) -> Optional[Dict[str, Any]]:
    if path is None:
        return None
    out: Dict[str, Any] = {"path": path, "format": None, "start": None, "end": None, "size": None,
                           "segments": None}
    if image is not None:
        out.update({"format": image.format, "start": image.start, "end": image.end, "size": image.size,
                    "segments": len(image.segments)})
    return out


def _target_json(info: Optional[TargetInfo]) -> Optional[Dict[str, Any]]:
    if info is None:
        return None
    options = info.options
    return {
        "probe": info.probe,
        "part": info.part.name,
        "idcode": info.idcode,
        "dev_id": info.dev_id,
        "rev_id": info.rev_id,
        "revision": info.rev_name,
        "flash_kb": info.part.flash_size // KB,
        "sectors": len(info.part.sectors),
        "unique_id": info.unique_id,
        "rom_table_designer": describe_jep106(info.rom_designer),
        "vdd": info.vdd,
        "vdd_source": info.vdd_source,
        "psize": info.psize_name,
        "option_bytes": {
            "optcr": options.optcr,
            "rdp": options.rdp,
            "rdp_level": options.rdp_level,
            "nwrp": options.nwrp,
            "write_protected_sectors": options.write_protected(info.part),
            "wdg_sw": options.software_watchdog,
            "bor_level": options.bor_level,
            "bor": options.bor_name,
            "nrst_stop": not options.reset_on_stop,
            "nrst_stdby": not options.reset_on_standby,
        },
        "warnings": list(info.warnings),
    }


def _sectors_json(outcome: Optional[Outcome]) -> List[Dict[str, Any]]:
    if outcome is None:
        return []
    if outcome.plan is not None:
        return [{"index": s.sector.index, "address": s.sector.start, "size": s.sector.size,
                 "action": s.action.value, "reason": s.reason, "bytes_programmed": s.programmed_bytes,
                 "bytes_kept": s.kept_bytes if s.action is not Action.SKIP else 0, "crc": s.crc,
                 "target_crc": s.target_crc}
                for s in outcome.plan.sectors]
    rows = [{"index": s.index, "address": s.start, "size": s.size, "action": "erase"} for s in outcome.erased]
    rows += [{"index": s.index, "address": s.start, "size": s.size, "action": "skip"} for s in outcome.skipped]
    return sorted(rows, key=lambda r: r["index"])
