"""`f4load`: the command line. `f4load app.bin` is file -> image -> plan -> stub -> probe -> flash.

    f4load app.bin                     program (same as `f4load program app.bin`)
    f4load erase 0-3,5 | --chip        erase sectors
    f4load verify app.hex              compare the flash with a file (by CRC on the target)
    f4load read 0x08000000 16K out.bin read memory into a file
    f4load info                        part, identity, flash size, unique ID, option bytes, supply

Each command opens a `f4load.session.Session` (connect, identify), does its work, and leaves the target in a
known state. Results are printed as text or, with --json, as one JSON object (`f4load.report`). Failures are
short messages on stderr and an exit status per class of failure (EXIT_CODES, docs/cli.md).
"""
from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

import click
from pyocd.core import exceptions as pyocd_errors

from f4load import __version__, interrupt, stream
from f4load.errors import F4LoadError, SessionError, StubError, UsageError
from f4load.image import FORMAT_ALIASES, FORMATS, ImageError, load_image
from f4load.option_bytes import BOR_FIELD, RDP_LEVEL1, OptionBytes
from f4load.part import FLASH_START
from f4load.plan import Plan
from f4load.registers import FLASH_OPTCR_NRST_STDBY, FLASH_OPTCR_NRST_STOP, FLASH_OPTCR_WDG_SW, RDP_LEVEL0, RDP_LEVEL2
from f4load.report import Report
from f4load.session import (
    CONNECT_MODES,
    SIM_PROBE,
    Session,
    backup_of,
    parse_sectors,
    restore_hint,
)

PROG = "f4load"
F = TypeVar("F", bound=Callable[..., Any])

# Exit status per class of failure (docs/cli.md).
EXIT_OK = 0
EXIT_FLASH = 1      # a flash operation failed, or protection forbids it
EXIT_USAGE = 2      # bad command line, bad input file, a request the target cannot satisfy
EXIT_PROBE = 3      # no probe, cannot connect, not an STM32F405/407/415/417
EXIT_LINK = 4       # the target reset or the probe lost it in the middle of the work
EXIT_VERIFY = 5     # the flash does not hold what it should
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit status:
  0  success
  1  a flash operation failed (the stub's error names the sector and the
     FLASH_SR bits), or read-out/write protection forbids it
  2  usage error or bad input file (nothing was erased)
  3  probe or connection failure, or the target is not an STM32F405/407/415/417
  4  the target reset or the probe lost it in the middle of the work
  5  verify mismatch: the flash does not hold what was written
"""

CONNECT_HELP = (
    "How to connect. under-reset (default): hold NRST while attaching and halt the core at its reset "
    "vector, before any application code runs. The application could otherwise turn the SWD pins into "
    "GPIOs or enter a low-power mode (the probe loses the target), start the IWDG (it cannot be stopped "
    "and would reset the chip mid-erase), or leave sticky FLASH_SR error flags or a FLASH_CR locked by a "
    "wrong key until the next reset. halt: halt the running core without a reset. attach: leave the core "
    "running (read and info only need this).")


PSIZE_HELP = ("Program/erase parallelism instead of the widest the supply allows (RM0090 Table 13). x8 draws the "
              "least current (DS8626): a board whose supply sags or resets under an x32 erase may get through at "
              "x8, slower. A width the measured VDD does not allow is refused before anything is erased.")


def exit_code_for(error: BaseException) -> int:
    """The exit status of a failure (EXIT_CODES_HELP)."""
    if isinstance(error, (SessionError,)):
        return error.exit_code
    if isinstance(error, ImageError):
        return EXIT_USAGE
    if isinstance(error, StubError):
        return EXIT_VERIFY if error.kind == "VERIFY_MISMATCH" else EXIT_FLASH
    if isinstance(error, (pyocd_errors.ProbeDisconnected, pyocd_errors.TransferError)):
        return EXIT_LINK
    if isinstance(error, pyocd_errors.Error):
        return EXIT_PROBE
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FLASH


# --- logging: pyocd's and ours, to stderr, at the level -q/-v ask for ------------------------------------

class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (click's test runner replaces it per invocation)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


_HANDLER = _StderrHandler()
_HANDLER.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))


def _configure_logging(quiet: bool, verbose: int) -> None:
    level = logging.ERROR if quiet else logging.WARNING if verbose < 2 else logging.INFO if verbose < 3 \
        else logging.DEBUG
    for name in ("pyocd", "f4load"):
        logger = logging.getLogger(name)
        if _HANDLER not in logger.handlers:
            logger.addHandler(_HANDLER)
        logger.propagate = False
        logger.setLevel(level)


# --- option types and shared options ---------------------------------------------------------------------

class Number(click.ParamType):
    """An integer in any base Python reads (0x..., 0b...), optionally with a K or M suffix (x1024)."""
    name = "number"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().replace("_", "")
        scale = 1
        if text[-1:].upper() in ("K", "M"):
            scale = 1024 if text[-1].upper() == "K" else 1024 * 1024
            text = text[:-1]
        try:
            number = int(text, 0) * scale
        except ValueError:
            self.fail(f"{value!r} is not a number (e.g. 0x08000000, 4096, 16K)", param, ctx)
        if number < 0:
            self.fail(f"{value!r} is negative", param, ctx)
        return number


NUMBER = Number()


def target_options(func: F) -> F:
    """Options every command that talks to a target has."""
    options = [
        click.option("--probe", "probe", default=SIM_PROBE, show_default=True, metavar="UID",
                     help="Debug probe: a pyocd probe unique ID (see `pyocd list`), or `sim` for the virtual "
                          "STM32F407 (pyocd probe f4sim; its state directory is $F4LOAD_SIM_STATE)."),
        click.option("--connect", "connect", type=click.Choice(CONNECT_MODES), default="under-reset",
                     show_default=True, help=CONNECT_HELP),
        click.option("--reset-run/--no-reset-run", "reset_run", default=None,
                     help="At the end, reset the target and let the application run (--reset-run), or leave the "
                          "core halted (--no-reset-run). Default: reset and run when f4load halted the core; "
                          "leave a core it never halted (--connect attach, read, info) alone. FLASH_CR is "
                          "locked again either way."),
        click.option("--vdd", "vdd", type=float, default=None, metavar="VOLTS",
                     help="Supply voltage, when the probe does not measure it (or misreads it): sets the "
                          "program/erase parallelism (x32 from 2.7 V, x16 from 2.1 V, x8 from 1.8 V; RM0090 "
                          "Table 13). Default: the probe's reading, else 3.3 V."),
        click.option("--sim-link", "sim_link", default=None, metavar="MODEL",
                     help="Virtual chip only: link model stlink-v2, stlink-v3 or ideal (default: "
                          "$F4LOAD_SIM_LINK, else stlink-v2)."),
        click.option("--json", "as_json", is_flag=True, help="Print one machine-readable JSON report on stdout."),
        click.option("-q", "--quiet", is_flag=True, help="Print errors only (no progress, no summary)."),
        click.option("-v", "--verbose", count=True,
                     help="More detail: -v the plan per sector, -vv pyocd's progress, -vvv debug logging."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def image_options(func: F) -> F:
    options = [
        click.argument("file", type=click.Path(dir_okay=True, allow_dash=False)),
        click.option("--address", "address", type=NUMBER, default=None,
                     help="Where a raw binary (.bin) goes (default 0x08000000)."),
        click.option("--format", "file_format", type=click.Choice(sorted(FORMATS + tuple(FORMAT_ALIASES))),
                     default=None, help="File format, overriding the extension."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


# --- the group: `f4load FILE` means `f4load program FILE` ---------------------------------------------------

class DefaultToProgram(click.Group):
    """A group whose default command is `program`: `f4load app.bin --no-verify` runs
    `f4load program app.bin --no-verify`. A first argument that names a command (or asks for help or the
    version) is left alone."""

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help", "--version"):
            args = ["program", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultToProgram, epilog=EXIT_CODES_HELP,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """Fast, truthful flash programming for STM32F405/407/415/417 over SWD.

    \b
      f4load app.bin                      program a file (= f4load program app.bin)
      f4load erase 0-3,5 | --chip         erase sectors
      f4load verify app.hex               compare the flash with a file
      f4load read 0x08000000 16K out.bin  read memory into a file
      f4load info                         part, identity, option bytes, supply

    Programming erases and rewrites only the sectors whose contents change (the target's CRC unit tells
    which), keeps the bytes of those sectors that lie outside the image, and verifies by CRC on the target.
    The file is checked against the detected part before anything is erased. Command options go after the
    command name (`f4load erase --chip --probe UID`). `--probe sim` (the default) is the virtual STM32F407.
    """


# --- running a command -----------------------------------------------------------------------------------

class _Context:
    """Options shared by every command, and the output they choose."""

    def __init__(self, probe: str, connect: str, reset_run: Optional[bool], vdd: Optional[float],
                 sim_link: Optional[str], as_json: bool, quiet: bool, verbose: int) -> None:
        self.probe, self.connect, self.reset_run, self.vdd, self.sim_link = probe, connect, reset_run, vdd, sim_link
        self.as_json, self.quiet, self.verbose = as_json, quiet, verbose
        self.keep_backup = False
        self.psize: Optional[str] = None  # --psize of program/erase (Session psize=)
        self.strict_identity = True  # diagnose: identity problems are findings (Session strict_identity=)
        _configure_logging(quiet or as_json, verbose)

    @property
    def talk(self) -> bool:
        """Human output on stdout (summary, info)."""
        return not self.quiet and not self.as_json

    def session(self) -> Session:
        return Session(probe=self.probe, connect=self.connect, reset_run=self.reset_run, vdd=self.vdd,
                       sim_link=self.sim_link, keep_backup=self.keep_backup, psize=self.psize,
                       strict_identity=self.strict_identity)

    def run(self, report: Report, work: Callable[[Session], None],
            before: Optional[Callable[[], None]] = None) -> None:
        """Run `before` (checks that need no target), then `work` in a session; print the report; exit with
        the status of the outcome."""
        started = time.monotonic()
        try:
            if before is not None:
                before()
            session = self.session()
            try:
                session.open()
                report.info = session.info
                if self.talk and session.info is not None:
                    for warning in session.info.warnings:
                        click.echo(f"{PROG}: warning: {warning}", err=True)
                work(session)
            finally:
                report.probe_commands = session.commands_since_open
                report.session_virtual_seconds = session.virtual_since_open
                session.close()
            interrupt.check("after the work had completed")  # a signal that came after the last safe point
        except (F4LoadError, StubError, pyocd_errors.Error, KeyboardInterrupt) as error:
            report.error = error
            report.exit_code = exit_code_for(error)
        report.wall_seconds = time.monotonic() - started
        self.finish(report)

    def finish(self, report: Report) -> None:
        if self.as_json:
            click.echo(report.to_json_text())
        if report.error is not None:
            _print_error(report.error)
        elif self.talk:
            if report.command == "info":
                for line in report.info_lines():
                    click.echo(line)
            elif report.text_lines:
                for line in report.text_lines:
                    click.echo(line)
            else:
                # `read ... -` writes the data on stdout: the summary must not end up in it.
                click.echo(report.summary(), err=report.details.get("out") == "-")
        if report.exit_code:
            raise click.exceptions.Exit(report.exit_code)


def _print_error(error: BaseException) -> None:
    if isinstance(error, interrupt.Interrupted):
        text = str(error)
    elif isinstance(error, KeyboardInterrupt):
        text = "interrupted; the target was left halted with FLASH_CR locked where the probe still reached it"
    elif isinstance(error, pyocd_errors.Error):
        text = f"probe: {' '.join(str(error).split()) or type(error).__name__}"
    else:
        text = str(error)
    click.echo(f"{PROG}: error: {text}", err=True)
    backup = backup_of(error)
    if backup is not None:
        click.echo(f"{PROG}: {restore_hint(backup)}", err=True)


class _ProgressBar:
    """A progress bar on stderr for erase and program work, in bytes, with the rate (virtual time on the
    virtual chip, else wall time). Shown only on a terminal and without --quiet/--json."""

    def __init__(self, ctx: _Context, session: Session) -> None:
        self.enabled = ctx.talk and sys.stderr.isatty()
        self.session = session
        self.bar: Any = None
        self.done = 0
        self.start_wall = 0.0
        self.start_virtual: Optional[float] = None

    def begin(self, total: int, label: str) -> None:
        if not self.enabled or total <= 0:
            return
        self.start_wall, self.start_virtual = time.monotonic(), self.session.virtual_now()
        self.bar = click.progressbar(length=total, label=label, file=sys.stderr, show_eta=False,
                                     show_percent=True, width=30, item_show_func=lambda item: item)
        self.bar.__enter__()

    def __call__(self, operation: stream.Operation, size: int) -> None:
        """A stub command completed (f4load.stream's progress callback): erases and program buffers advance
        the bar; the verify CRCs at the end are not part of its total."""
        if self.bar is None:
            return
        if isinstance(operation, stream.EraseSector):
            kind = "erase"
        elif isinstance(operation, stream.Program):
            kind = "program"
        else:
            return
        self.done += size
        virtual_now = self.session.virtual_now()
        if virtual_now is not None and self.start_virtual is not None:
            elapsed, clock = virtual_now - self.start_virtual, " virtual"
        else:
            elapsed, clock = time.monotonic() - self.start_wall, ""
        # No rate for work under 1 KB: a few buffers' time is mostly the link's latency, not a throughput.
        rate = f"{self.done / elapsed / KIB:,.0f} KB/s{clock}" if elapsed > 0 and self.bar.length >= KIB else ""
        self.bar.update(size, f"{kind:<7} {_amount(self.done, self.bar.length)} {rate}".rstrip())

    def end(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


KIB = 1024


def _amount(done: int, total: int) -> str:
    """"12/256 KB", or in bytes when the total is under 1 KB ("84/84 bytes")."""
    if total < KIB:
        return f"{done:,}/{total:,} bytes"
    return f"{done // KIB:,}/{total // KIB:,} KB"


# --- commands --------------------------------------------------------------------------------------------

def _load(report: Report, file: str, file_format: Optional[str], address: Optional[int]) -> Callable[[], None]:
    def load() -> None:
        report.image = load_image(file, format=file_format, address=address)
    return load


@cli.command(epilog=EXIT_CODES_HELP)
@image_options
@click.option("--no-keep", "no_keep", is_flag=True,
              help="Do not preserve the bytes of touched sectors that lie outside the image (they end up erased, "
                   "0xFF). Default: read them back and rewrite them.")
@click.option("--no-verify", "no_verify", is_flag=True,
              help="Skip the verification by CRC of every rewritten sector (each written word is still read back "
                   "by the stub).")
@click.option("--keep-backup", "keep_backup", is_flag=True,
              help="Keep the backup file of the bytes kept around the image (written before the first erase, "
                   "normally removed after a successful verify).")
@click.option("--psize", "psize", type=click.Choice(["x8", "x16", "x32"]), default=None, help=PSIZE_HELP)
@target_options
def program(file: str, address: Optional[int], file_format: Optional[str], no_keep: bool, no_verify: bool,
            keep_backup: bool, psize: Optional[str], **options: Any) -> None:
    """Program FILE (.bin, .hex, .srec, .elf) into flash.

    Only sectors whose contents change are erased and rewritten; sectors that already hold their new
    contents are skipped, blank ones are programmed without an erase. The bytes kept around the image in a
    sector to be erased are first saved to a backup file (Intel HEX, in the user cache directory or
    $F4LOAD_BACKUP_DIR); if the work fails, the error names it and `f4load BACKUP.hex` restores them.
    """
    ctx = _Context(**options)
    ctx.keep_backup = keep_backup
    ctx.psize = psize
    report = Report("program", file=file)

    def work(session: Session) -> None:
        bar = _ProgressBar(ctx, session)

        def before_work(plan: Plan) -> None:
            if ctx.verbose and not ctx.as_json:
                click.echo(plan.describe(), err=True)
            bar.begin(plan.bytes_erased + plan.bytes_programmed, "erase+program" if plan.bytes_erased else "program")

        assert report.image is not None
        try:
            report.outcome = session.program(report.image, keep=not no_keep, verify=not no_verify,
                                             progress=bar, before_work=before_work)
        finally:
            bar.end()

    ctx.run(report, work, before=_load(report, file, file_format, address))


@cli.command(epilog=EXIT_CODES_HELP, short_help="Erase sectors (0-3,5) or the whole flash (--chip).")
@click.argument("sectors", required=False)
@click.option("--chip", "chip", is_flag=True, help="Erase every sector of the part (sector by sector).")
@click.option("--force", "force", is_flag=True, help="Erase sectors that are already blank too.")
@click.option("--psize", "psize", type=click.Choice(["x8", "x16", "x32"]), default=None, help=PSIZE_HELP)
@target_options
def erase(sectors: Optional[str], chip: bool, force: bool, psize: Optional[str], **options: Any) -> None:
    """Erase SECTORS (e.g. 0-3,5) or, with --chip, the whole flash.

    Sectors already blank are skipped (one CRC tells) unless --force. --chip erases sector by sector rather
    than with a mass erase: on a 512 KB part that is faster (4.55 s against 8 s typical, DS8626 Table 40) and
    shows progress.
    """
    ctx = _Context(**options)
    ctx.psize = psize
    if chip == bool(sectors):
        raise click.UsageError("give either SECTORS (e.g. 0-3,5) or --chip")
    indexes: List[int] = []
    if sectors:
        try:
            indexes = parse_sectors(sectors)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="SECTORS") from None
    report = Report("erase")

    def work(session: Session) -> None:
        assert session.info is not None
        chosen = list(range(len(session.info.part.sectors))) if chip else indexes
        bar = _ProgressBar(ctx, session)
        try:
            report.outcome = session.erase(chosen, force=force, progress=bar,
                                           before_work=lambda todo: bar.begin(sum(s.size for s in todo), "erase"))
        finally:
            bar.end()

    ctx.run(report, work)


@cli.command(epilog=EXIT_CODES_HELP, short_help="Check that the flash holds FILE (by CRC on the target).")
@image_options
@target_options
def verify(file: str, address: Optional[int], file_format: Optional[str], **options: Any) -> None:
    """Check that the flash holds FILE (a CRC on the target per sector, no data read back)."""
    ctx = _Context(**options)
    report = Report("verify", file=file)

    def work(session: Session) -> None:
        assert report.image is not None
        report.outcome = session.verify(report.image)

    ctx.run(report, work, before=_load(report, file, file_format, address))


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("address", type=NUMBER)
@click.argument("length", type=NUMBER)
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True))
@target_options
def read(address: int, length: int, out: str, **options: Any) -> None:
    """Read LENGTH bytes at ADDRESS into the file OUT (`-` for stdout). Numbers take 0x.. and a K/M suffix."""
    ctx = _Context(**options)
    if out == "-" and ctx.as_json:
        raise click.UsageError("--json prints on stdout: give OUT a file name")
    if length == 0:
        raise click.BadParameter("must be at least 1", param_hint="LENGTH")
    report = Report("read", details={"address": address, "length": length, "out": out})

    def work(session: Session) -> None:
        assert session.info is not None
        if address < session.info.part.flash_end and address + length > FLASH_START:
            session.check_not_read_protected()
        if address + length > 1 << 32:
            raise UsageError(f"{length} bytes at {address:#010x} run past the end of the address space")
        data = session.read(address, length)
        if out == "-":
            sys.stdout.buffer.write(data)  # click 8.5 deprecates get_binary_stream
        else:
            try:
                with open(out, "wb") as handle:
                    handle.write(data)
            except OSError as error:
                raise UsageError(f"{out}: cannot write: {error.strerror or error}") from None

    ctx.run(report, work)


@cli.command(epilog=EXIT_CODES_HELP, short_help="Part, identity, flash size, unique ID, option bytes, supply.")
@target_options
def info(**options: Any) -> None:
    """Show the part, its identity (DEV_ID/REV_ID), flash size, unique ID, option bytes and supply."""
    ctx = _Context(**options)
    report = Report("info")
    ctx.run(report, lambda session: None)


# --- diagnose --------------------------------------------------------------------------------------------

@cli.command(epilog=EXIT_CODES_HELP, short_help="Find out why a board does not erase or program.")
@click.option("--attach", "attach", is_flag=True,
              help="Look at the running target (connect without reset): shows what the application does to the "
                   "flash interface (sticky FLASH_SR flags, FLASH_CR locked by a wrong key, a started IWDG), "
                   "which a connection under reset hides.")
@click.option("--psize", "psize", type=click.Choice(["x8", "x16", "x32"]), default=None,
              help="The parallelism you intend to use (or another tool uses): checked against the supply.")
@click.option("--trial-erase", "trial_sector", type=int, default=None, metavar="SECTOR",
              help="Erase this sector on purpose (its contents are LOST) and report the exact FLASH_SR bits, the "
                   "time against the datasheet, and whether the chip reset during it.")
@click.option("--yes", "yes", is_flag=True, help="Do not ask before the trial erase.")
@target_options
def diagnose(attach: bool, psize: Optional[str], trial_sector: Optional[int], yes: bool, **options: Any) -> None:
    """Check everything that makes an STM32F4 refuse to erase or program, and say how to fix it.

    A checklist with a verdict per line (ok / warning / problem): identity (clone detection), supply versus
    parallelism and BOR level, read and write protection, watchdog option, flash interface state, reset
    causes, and with --trial-erase a real erase of one sector. The summary names the most likely cause first
    and the command that fixes it. Exit status 0 when the checks ran, whatever they found (see the verdict).
    """
    from f4load.diagnose import diagnose as run_diagnosis

    if attach:
        options["connect"] = "attach"
    ctx = _Context(**options)
    ctx.strict_identity = False
    report = Report("diagnose")
    if trial_sector is not None and not yes and not ctx.as_json:
        click.confirm(f"The trial erase destroys the contents of sector {trial_sector}. Go on?", abort=True)
    elif trial_sector is not None and not yes:
        raise click.UsageError("--trial-erase with --json needs --yes (it destroys that sector)")

    def work(session: Session) -> None:
        result = run_diagnosis(session, psize=psize, trial_sector=trial_sector)
        report.details["diagnosis"] = result.as_json()
        report.text_lines = result.lines()

    ctx.run(report, work)


# --- option bytes ----------------------------------------------------------------------------------------

def _option_change(ctx: _Context, report: Report, change: Callable[[Session], Optional[OptionBytes]],
                   allow_rdp2: bool = False) -> None:
    """Run `change(session)` -> the new option bytes (None: nothing to do), program them, report both."""
    def work(session: Session) -> None:
        assert session.info is not None
        before = session.info.options
        new = change(session)
        report.details["before"] = _options_json(before, session)
        if new is None:
            report.details["after"] = report.details["before"]
            return
        after = session.set_option_bytes(new, allow_rdp2=allow_rdp2)
        report.details["after"] = _options_json(after, session)
        report.details["changed"] = [f"{name} {old} -> {value}" for name, old, value in before.differences(after)]

    ctx.run(report, work)


def _options_json(options: OptionBytes, session: Session) -> Dict[str, Any]:
    assert session.info is not None
    return {"optcr": options.optcr, "rdp_level": options.rdp_level, "rdp": options.rdp, "nwrp": options.nwrp,
            "write_protected_sectors": options.write_protected(session.info.part),
            "wdg_sw": options.software_watchdog, "bor_level": options.bor_level, "bor": options.bor_name,
            "nrst_stop": not options.reset_on_stop, "nrst_stdby": not options.reset_on_standby}


def _sector_indexes(text: str) -> List[int]:
    try:
        return parse_sectors(text)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="SECTORS") from None


def _check_sectors(session: Session, indexes: Sequence[int]) -> None:
    session._sectors(indexes)  # UsageError for a sector the part does not have


@cli.command(epilog=EXIT_CODES_HELP, short_help="Write-protect sectors (option bytes nWRP).")
@click.argument("sectors")
@target_options
def protect(sectors: str, **options: Any) -> None:
    """Write-protect SECTORS (e.g. 0-3): their nWRP bits become 0, and erase/program of them fails with WRPERR
    until `f4load unprotect` (RM0090 3.7.1)."""
    indexes = _sector_indexes(sectors)
    ctx = _Context(**options)

    def change(session: Session) -> OptionBytes:
        assert session.info is not None
        _check_sectors(session, indexes)
        return session.info.options.protecting(indexes)

    _option_change(ctx, Report("protect", details={"sectors": indexes}), change)


@cli.command(epilog=EXIT_CODES_HELP, short_help="Remove write protection (option bytes nWRP).")
@click.argument("sectors", required=False)
@click.option("--all", "all_sectors", is_flag=True, help="Every sector of the part.")
@target_options
def unprotect(sectors: Optional[str], all_sectors: bool, **options: Any) -> None:
    """Remove the write protection of SECTORS (e.g. 0-3) or, with --all, of every sector (nWRP bits to 1).
    The flash contents are not touched."""
    if all_sectors == bool(sectors):
        raise click.UsageError("give either SECTORS (e.g. 0-3) or --all")
    indexes = _sector_indexes(sectors) if sectors else []
    ctx = _Context(**options)

    def change(session: Session) -> OptionBytes:
        assert session.info is not None
        chosen = list(range(len(session.info.part.sectors))) if all_sectors else indexes
        _check_sectors(session, chosen)
        return session.info.options.unprotecting(chosen)

    _option_change(ctx, Report("unprotect", details={"sectors": indexes or "all"}), change)


RDP2_FLAG = "--i-understand-rdp2-is-permanent"


@cli.command(epilog=EXIT_CODES_HELP, short_help="Set the read-out protection level (0 mass-erases the flash).")
@click.argument("level", type=click.Choice(["0", "1", "2"]))
@click.option("--yes", "yes", is_flag=True, help="Do not ask before going from level 1 to 0 (a mass erase).")
@click.option(RDP2_FLAG, "rdp2_ok", is_flag=True,
              help="Needed for level 2: it is PERMANENT. The debug port is disabled for good and the option "
                   "bytes can never change again; the chip can never be reprogrammed over SWD.")
@target_options
def rdp(level: str, yes: bool, rdp2_ok: bool, **options: Any) -> None:
    """Set the read-out protection LEVEL (RM0090 3.7.3).

    \b
    0  no protection. From level 1 this MASS-ERASES the whole flash first (all data lost).
    1  flash cannot be read, erased or programmed while a debugger is attached.
    2  PERMANENT: debug disabled for good. Refused without --i-understand-rdp2-is-permanent.
    """
    if level == "2" and not rdp2_ok:
        raise click.UsageError(f"RDP level 2 is permanent: it disables the debug port (SWD/JTAG) for good and "
                               f"freezes the option bytes, so this chip could never be erased, reprogrammed or "
                               f"debugged again. If that is really what you want, add {RDP2_FLAG}")
    ctx = _Context(**options)
    value = {"0": RDP_LEVEL0, "1": RDP_LEVEL1, "2": RDP_LEVEL2}[level]

    def change(session: Session) -> Optional[OptionBytes]:
        assert session.info is not None
        current = session.info.options
        if current.rdp_level == int(level):
            return None
        if level == "0" and not yes:
            if ctx.as_json:
                raise UsageError("going to RDP level 0 mass-erases the whole flash: add --yes")
            click.confirm(f"Going from RDP level {current.rdp_level} to 0 MASS-ERASES the whole flash of the "
                          f"{session.info.part.name} ({session.info.part.flash_size // KIB} KB). Go on?",
                          abort=True, err=True)
        return current.with_rdp(value)

    _option_change(ctx, Report("rdp", details={"level": int(level)}), change, allow_rdp2=level == "2")


@cli.command("option-bytes", epilog=EXIT_CODES_HELP, short_help="Show or set BOR level and watchdog/reset bits.")
@click.option("--bor", "bor", type=click.Choice(sorted(BOR_FIELD)), default=None,
              help="Brown-out reset level: 3 (2.70 V), 2 (2.40 V), 1 (2.10 V) or off (RM0090 3.7.1).")
@click.option("--wdg", "wdg", type=click.Choice(["sw", "hw"]), default=None,
              help="sw: the IWDG runs only when software starts it; hw: it starts at every reset.")
@click.option("--nrst-stop", "nrst_stop", type=click.Choice(["0", "1"]), default=None,
              help="0: entering Stop mode resets the chip; 1: it does not.")
@click.option("--nrst-stdby", "nrst_stdby", type=click.Choice(["0", "1"]), default=None,
              help="0: entering Standby mode resets the chip; 1: it does not.")
@target_options
def option_bytes_command(bor: Optional[str], wdg: Optional[str], nrst_stop: Optional[str], nrst_stdby: Optional[str],
                         **options: Any) -> None:
    """Show the option bytes, or set the BOR level and the watchdog/reset bits. Protection has its own
    commands: protect, unprotect, rdp."""
    ctx = _Context(**options)
    report = Report("option-bytes")

    def change(session: Session) -> Optional[OptionBytes]:
        assert session.info is not None
        if (bor, wdg, nrst_stop, nrst_stdby) == (None, None, None, None):
            report.text_lines = [line for line in report.info_lines()
                                 if line.startswith(("option bytes", "  "))]
            return None
        new = session.info.options
        if bor is not None:
            new = new.with_bor(BOR_FIELD[bor])
        if wdg is not None:
            new = new.with_bit(FLASH_OPTCR_WDG_SW, wdg == "sw")
        if nrst_stop is not None:
            new = new.with_bit(FLASH_OPTCR_NRST_STOP, nrst_stop == "1")
        if nrst_stdby is not None:
            new = new.with_bit(FLASH_OPTCR_NRST_STDBY, nrst_stdby == "1")
        return None if new == session.info.options else new

    _option_change(ctx, report, change)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point: run the command; every failure is a message on stderr and an exit status."""
    interrupt.install()  # Ctrl-C/SIGTERM: recorded during target work, taken at safe points (f4load.interrupt)
    try:
        # Outside standalone mode click returns the status of an Exit raised by a command.
        status = cli.main(args=list(argv) if argv is not None else None, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # plain `f4load` (click >= 8.2): the help, not an error
            click.echo(exc.format_message())
            return EXIT_OK
        click.echo(f"{PROG}: error: {exc.format_message()}", err=True)
        return EXIT_USAGE
    except click.Abort:
        click.echo(f"{PROG}: error: aborted", err=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt as exc:  # outside the work (parsing, a prompt, the summary): nothing to undo
        click.echo(f"{PROG}: error: {exc if isinstance(exc, interrupt.Interrupted) else 'interrupted'}", err=True)
        return EXIT_INTERRUPTED
    except click.ClickException as exc:
        click.echo(f"{PROG}: error: {exc.format_message()}", err=True)
        return exc.exit_code
    return status if isinstance(status, int) else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
