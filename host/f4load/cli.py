"""`f4load`: the command line. `f4load app.bin` is file -> image -> plan -> stub -> probe -> flash.

    f4load app.bin [more.hex ...]      program (same as `f4load program ...`)
    f4load erase 0-3,5 | --chip        erase sectors
    f4load verify app.hex              compare the flash with a file (by CRC on the target)
    f4load read 0x08000000 16K out.bin read memory into a file
    f4load info                        part, identity, flash size, unique ID, option bytes, supply
    f4load reset [--halt]              reset the target
    f4load probes                      list the debug probes attached

Global options (`--probe`, `--json`, `-q`, `-v`, ...) go before or after the command name. Each command opens a
`f4load.session.Session` (connect, identify), does its work and leaves the target in a known state; with several
probes (`--probe` repeated, or `--probe all`) each board runs in its own worker (`f4load.boards`). Results are
text or, with --json, one JSON document (`f4load.report`, docs/report.schema.json); failures are one line on
stderr and an exit status per class of failure (`f4load.exit_status`).

Start-up: this module imports click and nothing heavy. pyocd, Unicorn, cffi and the file-format libraries are
imported by the commands that need them, so `f4load --help` and `--version` answer without loading them.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NoReturn, Optional, Sequence, TypeVar

import click

from f4load import __version__, exit_status, interrupt
from f4load.console import Console, ProgressBar, error_line
from f4load.console import amount as _amount  # noqa: F401 - kept for the tests that check the progress text

if TYPE_CHECKING:
    from f4load.report import Report
    from f4load.session import Session

PROG = "f4load"
F = TypeVar("F", bound=Callable[..., Any])

# Exit status per class of outcome (f4load.exit_status, docs/cli.md); the names the tests and scripts use.
EXIT_OK = exit_status.OK
EXIT_FLASH = exit_status.FLASH
EXIT_USAGE = exit_status.USAGE
EXIT_PROBE = exit_status.PROBE
EXIT_LINK = exit_status.LINK
EXIT_VERIFY = exit_status.VERIFY
EXIT_DIAGNOSE_PROBLEM = exit_status.DIAGNOSE_PROBLEM
EXIT_DIAGNOSE_WARNING = exit_status.DIAGNOSE_WARNING
EXIT_DECLINED = exit_status.DECLINED
EXIT_INTERRUPTED = exit_status.INTERRUPTED
EXIT_CODES_HELP = exit_status.HELP

CONNECT_MODES = ("under-reset", "halt", "attach")
CONNECT_HELP = (
    "How to connect. under-reset (default): hold NRST while attaching and halt the core at its reset "
    "vector, before any application code runs. The application could otherwise turn the SWD pins into "
    "GPIOs or enter a low-power mode (the probe loses the target), start the IWDG (it cannot be stopped and "
    "would reset the chip mid-erase), or leave sticky FLASH_SR error flags or a FLASH_CR locked by a wrong key "
    "until the next reset. halt: halt the running core without a reset. attach: leave the core running (read "
    "and info only need this).")
PROBE_HELP = (
    "Debug probe (repeat it, or `all`, for several boards at once): `auto` (default: the one probe attached), "
    "`all` (every probe attached), `sim` or `sim:NAME` (the virtual STM32F407, or the named virtual board NAME), "
    "or a probe's unique ID or a unique part of it (`f4load probes`). Default: $F4LOAD_PROBE, else auto.")


PSIZE_HELP = ("Program/erase parallelism instead of the widest the supply allows (RM0090 Table 13). x8 draws the "
              "least current (DS8626): a board whose supply sags or resets under an x32 erase may get through at "
              "x8, slower. A width the measured VDD does not allow is refused before anything is erased.")


def exit_code_for(error: BaseException) -> int:
    """The exit status of a failure (f4load.exit_status)."""
    if isinstance(error, KeyboardInterrupt):
        return exit_status.INTERRUPTED
    code = getattr(error, "exit_code", None)
    if isinstance(code, int):
        return code
    from pyocd.core import exceptions as pyocd_errors

    if isinstance(error, (pyocd_errors.ProbeDisconnected, pyocd_errors.TransferError)):
        return exit_status.LINK
    if isinstance(error, pyocd_errors.Error):
        return exit_status.PROBE
    return exit_status.FLASH


# --- option types -----------------------------------------------------------------------------------------

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


class Frequency(click.ParamType):
    """A clock frequency in Hz: 4000000, 4M, 1.8M, 950k."""
    name = "hz"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower().replace("_", "").removesuffix("hz")
        scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
        try:
            hz = int(float(text[:-1] if scale > 1 else text) * scale)
        except ValueError:
            self.fail(f"{value!r} is not a frequency (e.g. 4M, 1.8M, 950k, 4000000)", param, ctx)
        if not 1_000 <= hz <= 100_000_000:
            self.fail(f"{value!r}: an SWD clock is between 1 kHz and 100 MHz", param, ctx)
        return hz


NUMBER = Number()
FREQUENCY = Frequency()


# --- global options: before or after the command name -------------------------------------------------------

def global_options(func: F) -> F:
    """The options every command that talks to a target has; the group has them too, so they may come before
    the command name (`f4load --probe sim -v info`) or after it (`f4load info --probe sim -v`). Defaults are
    None/False here and resolved in `Settings.merge`, so a value given in one place is never overridden by the
    default of the other."""
    options = [
        click.option("--probe", "probe", multiple=True, metavar="PROBE", help=PROBE_HELP),
        click.option("--connect", "connect", type=click.Choice(CONNECT_MODES), default=None, help=CONNECT_HELP),
        click.option("--reset-run/--no-reset-run", "reset_run", default=None,
                     help="At the end, reset the target and let the application run (--reset-run), or leave the "
                          "core halted (--no-reset-run). Default: reset and run when f4load halted the core; "
                          "leave a core it never halted (--connect attach, read, info) alone. FLASH_CR is "
                          "locked again either way."),
        click.option("--vdd", "vdd", type=float, default=None, metavar="VOLTS",
                     help="Supply voltage, when the probe does not measure it (or misreads it): sets the "
                          "program/erase parallelism (x32 from 2.7 V, x16 from 2.1 V, x8 from 1.8 V; RM0090 "
                          "Table 13). Default: the probe's reading, else 3.3 V."),
        click.option("--frequency", "frequency", type=FREQUENCY, default=None, metavar="HZ",
                     help="SWD clock asked of the probe (e.g. 1.8M, 24M); the probe takes its fastest step not "
                          "above it. Default 8M: an ST-Link/V2's fastest (4 MHz) and 8 MHz on an ST-Link/V3, as "
                          "STM32CubeProgrammer; lower it for long leads."),
        click.option("--sim-link", "sim_link", default=None, metavar="MODEL",
                     help="Virtual chip only: link model stlink-v2, stlink-v3 or ideal (default: $F4LOAD_SIM_LINK, "
                          "else stlink-v2)."),
        click.option("--json", "as_json", is_flag=True, default=None,
                     help="Print exactly one JSON document on stdout (docs/report.schema.json), whatever happens."),
        click.option("-q", "--quiet", "quiet", is_flag=True, default=None,
                     help="Print errors only (no progress, no summary)."),
        click.option("-v", "--verbose", "verbose", count=True,
                     help="More detail: -v the plan per sector, -vv pyocd's progress, -vvv debug logging."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


GLOBAL_NAMES = ("probe", "connect", "reset_run", "vdd", "frequency", "sim_link", "as_json", "quiet", "verbose")


@dataclass
class Settings:
    """The global options, merged from before and after the command name."""
    probes: List[str] = field(default_factory=list)
    connect: str = "under-reset"
    reset_run: Optional[bool] = None
    vdd: Optional[float] = None
    frequency: Optional[int] = None
    sim_link: Optional[str] = None
    as_json: bool = False
    quiet: bool = False
    verbose: int = 0

    @classmethod
    def merge(cls, before: Dict[str, Any], after: Dict[str, Any]) -> Settings:
        """Options after the command name win; --probe values add up, and so do -v counts; a flag (--json,
        -q) given in either place is set."""
        def pick(name: str) -> Any:
            return after.get(name) if after.get(name) is not None else before.get(name)

        def flag(name: str) -> bool:
            return bool(before.get(name)) or bool(after.get(name))
        return cls(probes=[*before.get("probe", ()), *after.get("probe", ())],
                   connect=pick("connect") or "under-reset", reset_run=pick("reset_run"), vdd=pick("vdd"),
                   frequency=pick("frequency"), sim_link=pick("sim_link"), as_json=flag("as_json"),
                   quiet=flag("quiet"), verbose=(before.get("verbose") or 0) + (after.get("verbose") or 0))


@dataclass
class Invocation:
    """What the group knows for its commands: the arguments as typed (for the workers of several boards) and the
    global options given before the command name."""
    argv: List[str]
    before: Dict[str, Any] = field(default_factory=dict)


def _wants_json(argv: Sequence[str]) -> bool:
    """--json anywhere before `--` (checked before click parses, so a usage error is a JSON document too)."""
    for token in argv:
        if token == "--":
            return False
        if token == "--json":
            return True
    return False


def _command_name(argv: Sequence[str]) -> str:
    """The command a (possibly unparsable) command line asks for, for an error report: the first word that names
    a command, else `program`."""
    for token in argv:
        if token in cli.commands:
            return token
    return "program"


# --- the group: `f4load FILE` means `f4load program FILE` ---------------------------------------------------

class F4LoadGroup(click.Group):
    """The `f4load` group: global options before or after the command, a default command (`f4load app.bin` is
    `f4load program app.bin`), and `main` that turns every outcome into an exit status (and, with --json, into
    one JSON document on stdout)."""

    def resolve_command(self, ctx: click.Context, args: List[str]) -> Any:
        # The first word after the global options: a command, or else the first file to program. A file that has
        # the name of a command is reached with `f4load program NAME`.
        if args and self.get_command(ctx, args[0]) is None and not args[0].startswith("-"):
            return "program", self.get_command(ctx, "program"), args
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        # Ctrl-C outside a command's run (importing its modules, printing the report) passes click as
        # _Interrupt: click would print an empty line and turn it into a bare Abort.
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise _Interrupt(exc) from exc

    def main(self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        status = self._run(argv, prog_name or PROG, complete_var, **extra)
        if standalone_mode:
            sys.exit(status)
        return status

    def _run(self, argv: List[str], prog_name: str, complete_var: Optional[str], **extra: Any) -> int:
        as_json = _wants_json(argv)
        try:
            extra.setdefault("obj", Invocation(argv=argv))
            status = super().main(args=argv, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                                  **extra)
        except click.exceptions.Exit as exc:
            return int(exc.exit_code)
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # plain `f4load` (click >= 8.2): the help
                click.echo(exc.format_message())
                return exit_status.OK
            return _early_failure(argv, as_json, exc.format_message(), "UsageError", exit_status.USAGE)
        except click.Abort:
            return _early_failure(argv, as_json, "interrupted", "KeyboardInterrupt", exit_status.INTERRUPTED)
        except click.ClickException as exc:
            return _early_failure(argv, as_json, exc.format_message(), type(exc).__name__, exc.exit_code)
        except (KeyboardInterrupt, _Interrupt) as exc:
            cause = exc.interrupt if isinstance(exc, _Interrupt) else exc
            text = str(cause) if isinstance(cause, interrupt.Interrupted) else "interrupted before any work began; " \
                "nothing was changed"
            return _early_failure(argv, as_json, text, "KeyboardInterrupt", exit_status.INTERRUPTED)
        return status if isinstance(status, int) else exit_status.OK


class _Interrupt(Exception):
    """A KeyboardInterrupt on its way through click (F4LoadGroup.invoke)."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__(str(interrupt))
        self.interrupt = interrupt


def _early_failure(argv: Sequence[str], as_json: bool, message: str, kind: str, code: int) -> int:
    """A failure before a command ran (a usage error): one line on stderr, and with --json a JSON document."""
    error_line(message)
    if as_json:
        from f4load.report import Report

        report = Report(_command_name(argv), exit_code=code)
        report.error_override = {"type": kind, "message": message}
        click.echo(report.to_json_text())
    return code


@click.group(cls=F4LoadGroup, epilog=EXIT_CODES_HELP,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name=PROG)
@global_options
@click.pass_context
def cli(ctx: click.Context, **before: Any) -> None:
    """Fast, truthful flash programming for STM32F405/407/415/417 over SWD.

    \b
      f4load app.bin                      program a file (= f4load program app.bin)
      f4load boot.hex app.bin@0x08008000  program several files in one run
      f4load erase 0-3,5 | --chip         erase sectors
      f4load verify app.hex               compare the flash with a file
      f4load read 0x08000000 16K out.bin  read memory into a file
      f4load info                         part, identity, option bytes, supply
      f4load diagnose                     why does this board not erase or program?
      f4load reset [--halt]               reset the target
      f4load probes                       the debug probes attached

    Programming erases and rewrites only the sectors whose contents change (the target's CRC unit tells
    which), keeps the bytes of those sectors that lie outside the image, and verifies by CRC on the target.
    The files are checked against the detected part before anything is erased. Global options go before or
    after the command name. The probe is the one attached (--probe auto); `--probe sim` is the virtual
    STM32F407. Shell completion: `eval "$(_F4LOAD_COMPLETE=bash_source f4load)"` (docs/cli.md).
    """
    invocation = ctx.ensure_object(Invocation)
    invocation.before = before


# --- running a command -----------------------------------------------------------------------------------

class Command:
    """One command's run: its merged settings, its output, and the session(s) it opens."""

    def __init__(self, after: Dict[str, Any]) -> None:
        ctx = click.get_current_context()
        invocation = ctx.find_object(Invocation) or Invocation(argv=[])
        self.invocation = invocation
        self.settings = Settings.merge(invocation.before, {k: after.pop(k, None) for k in GLOBAL_NAMES})
        self.console = Console(as_json=self.settings.as_json, quiet=self.settings.quiet,
                               verbose=self.settings.verbose)
        self.keep_backup = False
        self.psize: Optional[str] = None  # --psize of program/erase (Session psize=)
        self.strict_identity = True  # diagnose: identity problems are findings (Session strict_identity=)
        self.several_boards_need: Optional[str] = None  # why this command cannot run on several boards

    @property
    def talk(self) -> bool:
        return self.console.talk

    def session(self, probe: str, **overrides: Any) -> Session:
        from f4load.session import Session

        s = self.settings
        options: Dict[str, Any] = {"probe": probe, "connect": s.connect, "reset_run": s.reset_run, "vdd": s.vdd,
                                   "sim_link": s.sim_link, "frequency": s.frequency, "keep_backup": self.keep_backup,
                                   "psize": self.psize, "strict_identity": self.strict_identity}
        options.update(overrides)
        return Session(**options)

    def ask(self, question: str) -> None:
        """Ask a yes/no question on the terminal; anything but yes is DeclinedError (nothing was done). Ctrl-C
        at the prompt is an interrupt (exit 130), no answer at all (no terminal, end of input) a no."""
        from f4load.errors import DeclinedError

        click.echo(f"{question} [y/N]: ", nl=False, err=True)
        try:
            answer = input()
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            raise DeclinedError("declined: nothing was done")

    def run(self, report: Report, work: Callable[[Session], None], before: Optional[Callable[[], None]] = None,
            session_options: Optional[Dict[str, Any]] = None, confirm: Optional[str] = None) -> None:
        """Run `before` (checks that need no target: the files), ask `confirm` (a yes/no question) if given, then
        `work` in a session on each board; print the report(s); exit with the status of the outcome."""
        from pyocd.core import exceptions as pyocd_errors

        from f4load import probes
        from f4load.errors import F4LoadError, StubError

        started = time.monotonic()
        with self.console.foreign_output():
            try:
                if before is not None:
                    before()
                boards = probes.expand(self.settings.probes)
                if len(boards) > 1:
                    self._run_boards(report, boards)
                report.probe_requested = boards[0]
                if confirm is not None:
                    self.ask(confirm)
                self._run_one(report, work, boards[0], session_options or {})
            except (F4LoadError, StubError, pyocd_errors.Error, KeyboardInterrupt) as error:
                report.error = error
                report.exit_code = exit_code_for(error)
        report.wall_seconds = time.monotonic() - started
        self.finish(report)

    def _run_one(self, report: Report, work: Callable[[Session], None], probe: str,
                 session_options: Dict[str, Any]) -> None:
        session = self.session(probe, **session_options)
        try:
            session.open()
            report.info = session.info
            report.probe_uid, report.probe_label = session.probe_uid, session.probe_label
            if probe == "auto":
                self.console.note(f"probe: {session.probe_label} (the one attached)")
            if self.talk and session.info is not None:
                for warning in session.info.warnings:
                    self.console.warn(warning)
            work(session)
        finally:
            if report.probe_label is None and session.probe_uid is not None:
                report.probe_uid, report.probe_label = session.probe_uid, session.probe_label
            report.probe_commands = session.commands_since_open
            report.session_virtual_seconds = session.virtual_since_open
            session.close()
        interrupt.check("after the work had completed")  # a signal that came after the last safe point

    def _run_boards(self, report: Report, boards: List[str]) -> NoReturn:
        from f4load import boards as several
        from f4load.errors import UsageError

        if self.several_boards_need:
            raise UsageError(f"{len(boards)} boards: {self.several_boards_need}")
        outcome = several.run(report.command, self.invocation.argv, boards, self.console)
        raise click.exceptions.Exit(outcome)

    def finish(self, report: Report) -> None:
        from f4load.session import backup_of, restore_hint

        if self.settings.as_json:
            self.console.result(report.to_json_text())
        if report.error is not None:
            error_line(_error_text(report.error))
            backup = backup_of(report.error)
            if backup is not None:
                click.echo(f"{PROG}: {restore_hint(backup)}", err=True)
        elif self.talk:
            if report.command == "info":
                for line in report.info_lines():
                    self.console.result(line)
            elif report.text_lines:
                for line in report.text_lines:
                    self.console.result(line)
            else:
                # `read ... -` writes the data on stdout: the summary must not end up in it.
                line = report.summary_line()
                if report.details.get("out") == "-":
                    click.echo(line, err=True)
                else:
                    self.console.result(line)
        if report.exit_code:
            raise click.exceptions.Exit(report.exit_code)


def _error_text(error: BaseException) -> str:
    if isinstance(error, interrupt.Interrupted):
        return str(error)
    if isinstance(error, KeyboardInterrupt):
        return "interrupted; the target was left halted with FLASH_CR locked where the probe still reached it"
    from pyocd.core import exceptions as pyocd_errors

    if isinstance(error, pyocd_errors.Error):
        return f"probe: {' '.join(str(error).split()) or type(error).__name__}"
    return str(error)


def _report(command: str, **fields: Any) -> Report:
    from f4load.report import Report

    return Report(command, **fields)


def _progress(command: Command, session: Session) -> ProgressBar:
    from f4load import stream

    def kind_of(operation: Any) -> Optional[str]:
        if isinstance(operation, (stream.EraseSector, stream.EraseChip)):
            return "erase"
        if isinstance(operation, stream.Program):
            return "program"
        return None

    return ProgressBar(command.console, kind_of, session.virtual_now)


def _load(report: Report, files: Sequence[str], file_format: Optional[str], address: Optional[int]
          ) -> Callable[[], None]:
    def load() -> None:
        from f4load.image import load_images

        report.image = load_images(files, format=file_format, address=address)
    return load


def image_options(func: F) -> F:
    options = [
        click.argument("files", nargs=-1, required=True, metavar="FILE[@ADDRESS]...",
                       type=click.Path(dir_okay=True, allow_dash=False)),
        click.option("--address", "address", type=NUMBER, default=None,
                     help="Where a raw binary (.bin) goes (default 0x08000000). With several files, write "
                          "FILE@ADDRESS instead."),
        click.option("--format", "file_format", default=None, metavar="FORMAT",
                     help="File format, overriding the extension: bin, ihex (hex), srec (s19), elf."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


# --- commands --------------------------------------------------------------------------------------------

@cli.command(epilog=EXIT_CODES_HELP)
@image_options
@click.option("--keep/--no-keep", "keep", default=True,
              help="Preserve the bytes of touched sectors that lie outside the image (default), or let them end "
                   "up erased (0xFF) with --no-keep.")
@click.option("--verify/--no-verify", "verify", default=True,
              help="Verify every rewritten sector by CRC on the target (default). With --no-verify each written "
                   "word is still read back by the stub.")
@click.option("--keep-backup", "keep_backup", is_flag=True,
              help="Keep the backup file of the bytes kept around the image (written before their sector's erase, "
                   "normally removed after a successful verify).")
@click.option("--psize", "psize", type=click.Choice(["x8", "x16", "x32"]), default=None, help=PSIZE_HELP)
@global_options
def program(files: Sequence[str], address: Optional[int], file_format: Optional[str], keep: bool, verify: bool,
            keep_backup: bool, psize: Optional[str], **options: Any) -> None:
    """Program FILE... (.bin, .hex, .srec, .elf) into flash.

    Several files are programmed in one run: `f4load boot.hex app.bin@0x08008000` (a raw binary takes its
    address after @; two files that place bytes at the same address are an error, found before anything is
    erased). Only sectors whose contents change are erased and rewritten; sectors that already hold their new
    contents are skipped, blank ones are programmed without an erase. The bytes kept around the image in a
    sector to be erased are first saved to a backup file (Intel HEX, in the user cache directory or
    $F4LOAD_BACKUP_DIR); if the work fails, the error names it and `f4load BACKUP.hex` restores them.
    """
    command = Command(options)
    command.keep_backup = keep_backup
    command.psize = psize
    report = _report("program", file=" ".join(files), files=list(files))

    def work(session: Session) -> None:
        bar = _progress(command, session)

        def before_work(plan: Any) -> None:
            if command.settings.verbose and not command.settings.as_json:
                click.echo(plan.describe(), err=True)
            bar.begin(plan.bytes_erased + plan.bytes_programmed, "erase+program" if plan.bytes_erased else "program")

        assert report.image is not None
        try:
            report.outcome = session.program(report.image, keep=keep, verify=verify, progress=bar,
                                             before_work=before_work)
        finally:
            bar.end()

    command.run(report, work, before=_load(report, files, file_format, address))


@cli.command(epilog=EXIT_CODES_HELP, short_help="Erase sectors (0-3,5) or the whole flash (--chip).")
@click.argument("sectors", required=False)
@click.option("--chip", "chip", is_flag=True, help="Erase every sector of the part (one mass erase where that is "
              "faster: on a 1 MB part; sector by sector on a 512 KB part).")
@click.option("--force", "force", is_flag=True, help="Erase sectors that are already blank too.")
@click.option("--psize", "psize", type=click.Choice(["x8", "x16", "x32"]), default=None, help=PSIZE_HELP)
@global_options
def erase(sectors: Optional[str], chip: bool, force: bool, psize: Optional[str], **options: Any) -> None:
    """Erase SECTORS (e.g. 0-3,5) or, with --chip, the whole flash.

    Sectors already blank are skipped (one CRC tells) unless --force. --chip uses one mass erase where that is
    faster, on a 1 MB part (8 s against 8.55 s typical at x32, DS8626 Table 40); on a 512 KB part the sector
    erases are faster (4.55 s against 8 s) and show progress.
    """
    command = Command(options)
    command.psize = psize
    if chip == bool(sectors):
        raise click.UsageError("give either SECTORS (e.g. 0-3,5) or --chip")
    indexes = _sector_indexes(sectors) if sectors else []
    report = _report("erase")

    def work(session: Session) -> None:
        assert session.info is not None
        chosen = list(range(len(session.info.part.sectors))) if chip else indexes
        bar = _progress(command, session)
        try:
            report.outcome = session.erase(chosen, force=force, progress=bar,
                                           before_work=lambda todo: bar.begin(sum(s.size for s in todo), "erase"))
        finally:
            bar.end()

    command.run(report, work)


@cli.command(epilog=EXIT_CODES_HELP, short_help="Check that the flash holds FILE... (by CRC on the target).")
@image_options
@global_options
def verify(files: Sequence[str], address: Optional[int], file_format: Optional[str], **options: Any) -> None:
    """Check that the flash holds FILE... (a CRC on the target per sector, no data read back)."""
    command = Command(options)
    report = _report("verify", file=" ".join(files), files=list(files))

    def work(session: Session) -> None:
        assert report.image is not None
        report.outcome = session.verify(report.image)

    command.run(report, work, before=_load(report, files, file_format, address))


@cli.command(epilog=EXIT_CODES_HELP)
@click.argument("address", type=NUMBER)
@click.argument("length", type=NUMBER)
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True))
@global_options
def read(address: int, length: int, out: str, **options: Any) -> None:
    """Read LENGTH bytes at ADDRESS into the file OUT (`-` for stdout). Numbers take 0x.. and a K/M suffix."""
    command = Command(options)
    command.several_boards_need = "read writes one file; run it once per probe"
    if out == "-" and command.settings.as_json:
        raise click.UsageError("--json prints on stdout: give OUT a file name")
    if length == 0:
        raise click.BadParameter("must be at least 1", param_hint="LENGTH")
    report = _report("read", details={"address": address, "length": length, "out": out})

    def work(session: Session) -> None:
        from f4load.errors import UsageError
        from f4load.part import FLASH_START

        assert session.info is not None
        if address < session.info.part.flash_end and address + length > FLASH_START:
            session.check_not_read_protected()
        if address + length > 1 << 32:
            raise UsageError(f"{length} bytes at {address:#010x} run past the end of the address space")
        data = session.read(address, length)
        if out == "-":
            command.console.binary(data)
        else:
            try:
                with open(out, "wb") as handle:
                    handle.write(data)
            except OSError as error:
                raise UsageError(f"{out}: cannot write: {error.strerror or error}") from None

    command.run(report, work)


@cli.command(epilog=EXIT_CODES_HELP, short_help="Part, identity, flash size, unique ID, option bytes, supply.")
@global_options
def info(**options: Any) -> None:
    """Show the part, its identity (DEV_ID/REV_ID), flash size, unique ID, option bytes and supply."""
    command = Command(options)
    command.run(_report("info"), lambda session: None)


@cli.command(epilog=EXIT_CODES_HELP, short_help="Reset the target (and let it run, or halt it).")
@click.option("--halt", "halt", is_flag=True, help="Halt the core at its reset vector instead of letting it run.")
@global_options
def reset(halt: bool, **options: Any) -> None:
    """Reset the target: the application starts from its reset vector, or with --halt the core waits there
    (for a debugger). The connection leaves the running core alone until the reset."""
    command = Command(options)
    report = _report("reset", details={"halt": halt})

    def work(session: Session) -> None:
        report.details.update(session.reset(halt=halt))

    command.run(report, work, session_options={"connect": "attach", "reset_run": False})


@cli.command(short_help="List the debug probes attached.")
@click.option("--json", "as_json", is_flag=True, default=None, help="One JSON document on stdout.")
@click.option("-q", "--quiet", "quiet", is_flag=True, default=None, help="Only the unique IDs.")
def probes(as_json: Optional[bool], quiet: Optional[bool]) -> None:
    """List the debug probes pyocd sees (ST-Link, CMSIS-DAP, J-Link, ...), and how to reach the virtual
    STM32F407. Exit status 0 whether or not any probe is attached."""
    import json

    from f4load import probes as probe_choice
    from f4load.errors import F4LoadError

    invocation = click.get_current_context().find_object(Invocation)
    before = invocation.before if invocation is not None else {}
    as_json = bool(as_json or before.get("as_json"))
    quiet = bool(quiet or before.get("quiet"))
    console = Console(as_json=as_json, quiet=quiet)
    with console.foreign_output():
        try:
            found = probe_choice.describe_all(probe_choice.attached())
        except F4LoadError as error:
            error_line(str(error))
            raise click.exceptions.Exit(error.exit_code) from None
    virtual = {"probe": "sim", "named_boards": "sim:NAME", "description": probe_choice.SIM_DESCRIPTION,
               "note": "the virtual chip is never chosen by --probe auto or all; ask for it by name"}
    if as_json:
        console.result(json.dumps({"f4load": __version__, "command": "probes", "result": "ok", "exit_code": 0,
                                   "probes": [vars(p) for p in found], "virtual": virtual}, indent=2))
        return
    if quiet:
        for p in found:
            console.result(p.uid)
        return
    if found:
        width = max(len(p.uid) for p in found)
        for p in found:
            console.result(f"{p.uid:<{width}}  {p.vendor}  {p.product}")
    else:
        console.result("no debug probe attached (pyocd sees no ST-Link, CMSIS-DAP or J-Link)")
    console.result("virtual STM32F407: --probe sim (or sim:NAME for a named virtual board; F4LOAD_PROBE=sim makes "
                   "it the default)")


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
@global_options
def diagnose(attach: bool, psize: Optional[str], trial_sector: Optional[int], yes: bool, **options: Any) -> None:
    """Check everything that makes an STM32F4 refuse to erase or program, and say how to fix it.

    A checklist with a verdict per line (ok / warning / problem): identity (clone detection), supply versus
    parallelism and BOR level, read and write protection, watchdog option, flash interface state, reset
    causes, and with --trial-erase a real erase of one sector. The summary names the most likely cause first
    and the command that fixes it. Exit status 0 when nothing was found, 6 when the verdict is "problem", 7
    when it is "warning" (so a production line can gate on it).
    """
    command = Command(options)
    command.strict_identity = False
    if attach:
        command.settings.connect = "attach"
    report = _report("diagnose")
    if trial_sector is not None and not yes:
        if command.settings.as_json:
            raise click.UsageError("--trial-erase with --json needs --yes (it destroys that sector)")
        command.several_boards_need = "the trial erase destroys a sector on each board: add --yes"

    def work(session: Session) -> None:
        from f4load.diagnose import PROBLEM, WARNING
        from f4load.diagnose import diagnose as run_diagnosis

        result = run_diagnosis(session, psize=psize, trial_sector=trial_sector)
        report.details["diagnosis"] = result.as_json()
        report.text_lines = result.lines()
        report.exit_code = {PROBLEM: exit_status.DIAGNOSE_PROBLEM,
                            WARNING: exit_status.DIAGNOSE_WARNING}.get(result.verdict, exit_status.OK)

    confirm = (f"The trial erase destroys the contents of sector {trial_sector}. Go on?"
               if trial_sector is not None and not yes else None)
    command.run(report, work, confirm=confirm)


# --- option bytes ----------------------------------------------------------------------------------------

def _option_change(command: Command, report: Report, change: Callable[[Session], Any], allow_rdp2: bool = False
                   ) -> None:
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

    command.run(report, work)


def _options_json(options: Any, session: Session) -> Dict[str, Any]:
    assert session.info is not None
    return {"optcr": options.optcr, "rdp_level": options.rdp_level, "rdp": options.rdp, "nwrp": options.nwrp,
            "write_protected_sectors": options.write_protected(session.info.part),
            "wdg_sw": options.software_watchdog, "bor_level": options.bor_level, "bor": options.bor_name,
            "nrst_stop": not options.reset_on_stop, "nrst_stdby": not options.reset_on_standby}


def _sector_indexes(text: str) -> List[int]:
    from f4load.session import parse_sectors

    try:
        return parse_sectors(text)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="SECTORS") from None


def _check_sectors(session: Session, indexes: Sequence[int]) -> None:
    session._sectors(indexes)  # UsageError for a sector the part does not have


@cli.command(epilog=EXIT_CODES_HELP, short_help="Write-protect sectors (option bytes nWRP).")
@click.argument("sectors")
@global_options
def protect(sectors: str, **options: Any) -> None:
    """Write-protect SECTORS (e.g. 0-3): their nWRP bits become 0, and erase/program of them fails with WRPERR
    until `f4load unprotect` (RM0090 3.7.1)."""
    indexes = _sector_indexes(sectors)
    command = Command(options)

    def change(session: Session) -> Any:
        assert session.info is not None
        _check_sectors(session, indexes)
        return session.info.options.protecting(indexes)

    _option_change(command, _report("protect", details={"sectors": indexes}), change)


@cli.command(epilog=EXIT_CODES_HELP, short_help="Remove write protection (option bytes nWRP).")
@click.argument("sectors", required=False)
@click.option("--all", "all_sectors", is_flag=True, help="Every sector of the part.")
@global_options
def unprotect(sectors: Optional[str], all_sectors: bool, **options: Any) -> None:
    """Remove the write protection of SECTORS (e.g. 0-3) or, with --all, of every sector (nWRP bits to 1).
    The flash contents are not touched."""
    if all_sectors == bool(sectors):
        raise click.UsageError("give either SECTORS (e.g. 0-3) or --all")
    indexes = _sector_indexes(sectors) if sectors else []
    command = Command(options)

    def change(session: Session) -> Any:
        assert session.info is not None
        chosen = list(range(len(session.info.part.sectors))) if all_sectors else indexes
        _check_sectors(session, chosen)
        return session.info.options.unprotecting(chosen)

    _option_change(command, _report("unprotect", details={"sectors": indexes or "all"}), change)


RDP2_FLAG = "--i-understand-rdp2-is-permanent"


@cli.command(epilog=EXIT_CODES_HELP, short_help="Set the read-out protection level (0 mass-erases the flash).")
@click.argument("level", type=click.Choice(["0", "1", "2"]))
@click.option("--yes", "yes", is_flag=True, help="Do not ask before going from level 1 to 0 (a mass erase).")
@click.option(RDP2_FLAG, "rdp2_ok", is_flag=True,
              help="Needed for level 2: it is PERMANENT. The debug port is disabled for good and the option "
                   "bytes can never change again; the chip can never be reprogrammed over SWD.")
@global_options
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
    command = Command(options)
    if level == "0" and not yes:
        if command.settings.as_json:
            raise click.UsageError("going to RDP level 0 mass-erases the whole flash: add --yes")
        command.several_boards_need = "going to RDP level 0 mass-erases every board: add --yes"

    def change(session: Session) -> Any:
        from f4load.option_bytes import RDP_LEVEL1
        from f4load.part import KB
        from f4load.registers import RDP_LEVEL0, RDP_LEVEL2

        assert session.info is not None
        current = session.info.options
        if current.rdp_level == int(level):
            return None
        if level == "0" and not yes:
            command.ask(f"Going from RDP level {current.rdp_level} to 0 MASS-ERASES the whole flash of the "
                        f"{session.info.part.name} ({session.info.part.flash_size // KB} KB). Go on?")
        return current.with_rdp({"0": RDP_LEVEL0, "1": RDP_LEVEL1, "2": RDP_LEVEL2}[level])

    _option_change(command, _report("rdp", details={"level": int(level)}), change, allow_rdp2=level == "2")


BOR_CHOICES = ("3", "2", "1", "off")  # f4load.registers.BOR_FIELD's keys


@cli.command("option-bytes", epilog=EXIT_CODES_HELP, short_help="Show or set BOR level and watchdog/reset bits.")
@click.option("--bor", "bor", type=click.Choice(BOR_CHOICES), default=None,
              help="Brown-out reset level: 3 (2.70 V), 2 (2.40 V), 1 (2.10 V) or off (RM0090 3.7.1).")
@click.option("--wdg", "wdg", type=click.Choice(["sw", "hw"]), default=None,
              help="sw: the IWDG runs only when software starts it; hw: it starts at every reset.")
@click.option("--nrst-stop", "nrst_stop", type=click.Choice(["0", "1"]), default=None,
              help="0: entering Stop mode resets the chip; 1: it does not.")
@click.option("--nrst-stdby", "nrst_stdby", type=click.Choice(["0", "1"]), default=None,
              help="0: entering Standby mode resets the chip; 1: it does not.")
@global_options
def option_bytes_command(bor: Optional[str], wdg: Optional[str], nrst_stop: Optional[str], nrst_stdby: Optional[str],
                         **options: Any) -> None:
    """Show the option bytes, or set the BOR level and the watchdog/reset bits. Protection has its own
    commands: protect, unprotect, rdp."""
    command = Command(options)
    report = _report("option-bytes")

    def change(session: Session) -> Any:
        from f4load.registers import BOR_FIELD, FLASH_OPTCR_NRST_STDBY, FLASH_OPTCR_NRST_STOP, FLASH_OPTCR_WDG_SW

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

    _option_change(command, report, change)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point: run the command; every outcome is an exit status (f4load.exit_status)."""
    interrupt.install()  # Ctrl-C/SIGTERM: recorded during target work, taken at safe points (f4load.interrupt)
    return int(cli.main(args=list(argv) if argv is not None else None, prog_name=PROG, standalone_mode=False))


if __name__ == "__main__":
    sys.exit(main())
