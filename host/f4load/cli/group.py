"""The machinery of the `f4load` command line: the click group, the global options (before or after the command
name), and `Command`, which runs one command's work in a session (or on several boards) and prints its report.

The commands themselves are in f4load.cli.flash (program, erase, verify, read), f4load.cli.target (info,
reset, probes, diagnose) and f4load.cli.option_bytes (protect, unprotect, rdp, option-bytes). This module imports
click and nothing heavy: pyocd, Unicorn, cffi and the file-format libraries are imported by the commands that
need them, so `f4load --help` and `--version` answer without loading them.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NoReturn, Optional, Sequence, TypeVar

import click

from f4load import __version__, exit_status, interrupt
from f4load.console import Console, ProgressBar, error_line

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
        from f4load.backup import backup_of, restore_hint

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


def new_report(command: str, **fields: Any) -> Report:
    from f4load.report import Report

    return Report(command, **fields)


def progress_bar(command: Command, session: Session) -> ProgressBar:
    from f4load import stream

    def kind_of(operation: Any) -> Optional[str]:
        if isinstance(operation, (stream.EraseSector, stream.EraseChip)):
            return "erase"
        if isinstance(operation, stream.Program):
            return "program"
        return None

    return ProgressBar(command.console, kind_of, session.virtual_now)


def file_loader(report: Report, files: Sequence[str], file_format: Optional[str], address: Optional[int]
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

def sector_indexes(text: str) -> List[int]:
    from f4load.session import parse_sectors

    try:
        return parse_sectors(text)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="SECTORS") from None


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point: run the command; every outcome is an exit status (f4load.exit_status)."""
    interrupt.install()  # Ctrl-C/SIGTERM: recorded during target work, taken at safe points (f4load.interrupt)
    return int(cli.main(args=list(argv) if argv is not None else None, prog_name=PROG, standalone_mode=False))

