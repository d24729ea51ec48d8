"""`f4load-sim`: look at, reset and break the persisted virtual STM32F407.

    f4load-sim status                 flash sectors, decoded option bytes, OTP, faults, state directory
    f4load-sim reset                  a factory-new chip (erased, factory option bytes, no faults)
    f4load-sim fault wrp=0-3 rdp1     add faults (text form: docs/faults.md)
    f4load-sim fault --clear          remove every fault
    f4load-sim faults                 the known faults, one line each
    f4load-sim serve [--port 7184] [--board NAME ...] [--link stlink-v2|stlink-v3] [FAULT...]
                                      the boards behind virtual ST-Links, over the ST-Link TCP protocol
    f4load-sim --state DIR ...        use DIR instead of $F4LOAD_SIM_STATE or the default
    f4load-sim --board NAME ...       the named virtual board NAME (`f4load --probe sim:NAME`)

Errors are one line on stderr: exit status 2 for a usage error (including a bad fault spec), 1 for a state
directory that cannot be used (corrupted, in use by another process, not writable).
"""
from __future__ import annotations

import sys
from typing import Any, Callable, List, Optional, Sequence, TypeVar

import click

from f4load import registers as reg
from f4load.part import KB, OTP_SIZE, part_for_flash_kb, sectors_for
from f4load.sim.faults import FAULT_KINDS, FAULTS_ENV, Faults, FaultSpecError, format_sectors
from f4load.sim.flash import OptionBytes
from f4load.sim.server import ServeError
from f4load.sim.state import (
    ChipState,
    SimStateError,
    board_dir,
    clear_faults,
    inject_faults,
    load_state,
    option_faults_of,
    read_last_session,
    read_stored_faults,
    reset_state,
    state_dir,
)

PROG = "f4load-sim"
F = TypeVar("F", bound=Callable[..., Any])


def _state_option(func: F) -> F:
    return click.option("--state", "state", metavar="DIR", default=None,
                        help="State directory (default: $F4LOAD_SIM_STATE or the user cache directory).")(func)


def _directory(ctx: click.Context, state: Optional[str]) -> Optional[str]:
    """--state given to the command wins over --state given before it; --board picks a named board in it."""
    root, board = ctx.obj
    return str(board_dir(board, state if state is not None else root))


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@_state_option
@click.option("--board", "board", metavar="NAME", default=None,
              help="A named virtual board (`f4load --probe sim:NAME`): its state is boards/NAME in the state "
                   "directory, with its own unique ID. Default: the default board.")
@click.pass_context
def cli(ctx: click.Context, state: Optional[str], board: Optional[str]) -> None:
    """Inspect, reset and inject faults into the persisted virtual STM32F407."""
    ctx.obj = (state, board)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


# ---------------------------------------------------------------------------------------------------------
@cli.command()
@_state_option
@click.pass_context
def status(ctx: click.Context, state: Optional[str]) -> None:
    """Show flash sectors, decoded option bytes, OTP, active faults and the state directory."""
    directory = state_dir(_directory(ctx, state))
    chip = load_state(directory)
    stored = read_stored_faults(directory)
    for line in status_lines(chip, stored, str(directory)):
        click.echo(line)
    last = read_last_session(directory)
    if last is not None:
        click.echo(f"last debugger session (pid {last.get('pid')}) left: core {last.get('core')}, FLASH_CR "
                   f"0x{int(last.get('flash_cr', 0)):08X} ({'locked' if last.get('flash_cr_locked') else 'UNLOCKED'}), "
                   f"FLASH_SR 0x{int(last.get('flash_sr', 0)):08X}, at {float(last.get('virtual_s', 0)):.3f} s virtual")


def status_lines(chip: ChipState, stored: Faults, directory: str) -> List[str]:
    """The `status` report, one string per line."""
    _, part = part_for_flash_kb(chip.flash_kb)
    faults = chip.faults
    lines = [f"state directory: {directory}",
             f"chip: {part.name}{' (clone)' if faults.clone else ''}, {chip.flash_kb} KB flash, "
             f"unique ID {chip.unique_id.hex()}",
             "flash:"]
    sectors = sectors_for(chip.flash_kb * KB)
    for sector in sectors:
        offset = sector.start - sectors[0].start
        data = chip.flash[offset:offset + sector.size]
        programmed = len(data) - data.count(b"\xff")
        what = "erased" if programmed == 0 else f"non-blank ({programmed} bytes not 0xFF)"
        lines.append(f"  sector {sector.index:2d}  0x{sector.start:08X}  {sector.size // KB:3d} KB  {what}")
    lines.append(f"option bytes: OPTCR user bits 0x{chip.options.optcr:08X}")
    lines.extend("  " + line for line in option_byte_lines(chip.options))
    lines.append("  " + otp_line(chip.options))
    lines.append("faults:" + ("" if _has_faults(faults, chip.options) else " none"))
    shown = stored.without_option_byte_faults().merged(option_faults_of(chip.options))
    for line in shown.describe():
        lines.append(f"  {line}")
    extra = _environment_only(faults, shown)
    for line in extra.describe():
        lines.append(f"  {line} (from {FAULTS_ENV})")
    return lines


def _has_faults(faults: Faults, options: OptionBytes) -> bool:
    return not faults.is_default() or not option_faults_of(options).is_default()


def _environment_only(effective: Faults, shown: Faults) -> Faults:
    """Fields where the effective faults differ from those already shown (i.e. set by the environment)."""
    out = Faults()
    for name in Faults.__dataclass_fields__:
        if getattr(effective, name) != getattr(shown, name):
            setattr(out, name, getattr(effective, name))
    if out.write_protected:
        out.write_protected = [s for s in out.write_protected if s not in shown.write_protected]
    if out.reset_during:
        out.reset_during = [r for r in out.reset_during if r not in shown.reset_during]
    out.sticky_sr &= ~shown.sticky_sr
    return out


def option_byte_lines(options: OptionBytes) -> List[str]:
    """The OPTCR user bits decoded (RM0090 3.7.1 and 3.9.10)."""
    optcr = options.optcr
    rdp = options.rdp_byte
    rdp_text = {0: "level 0 (no protection)", 1: "level 1 (flash read-protected while a debugger is attached)",
                2: "level 2 (permanent: debug disabled, option bytes frozen)"}[options.rdp_level]
    protected = options.write_protected_sectors
    nwrp = options.nwrp
    wrp_text = ("no sector write-protected" if not protected
                else f"sectors {format_sectors(protected)} write-protected")
    wdg_text = ("1: software watchdog (IWDG off until software starts it)" if optcr & reg.FLASH_OPTCR_WDG_SW
                else "0: hardware watchdog (IWDG runs from every reset)")
    bor = (optcr & reg.FLASH_OPTCR_BOR_LEV_MASK) >> reg.FLASH_OPTCR_BOR_LEV_SHIFT
    return [f"RDP        0x{rdp:02X}: {rdp_text}",
            f"nWRP       0x{nwrp:03X}: {wrp_text}",
            f"WDG_SW     {wdg_text}",
            f"BOR_LEV    {bor:02b}: {reg.BOR_LEVEL_NAMES[bor]}",
            f"nRST_STOP  {int(bool(optcr & reg.FLASH_OPTCR_NRST_STOP))}, "
            f"nRST_STDBY {int(bool(optcr & reg.FLASH_OPTCR_NRST_STDBY))} (1: no reset on entering stop/standby)"]


OTP_BLOCKS = 16  # RM0090 3.8: 512 OTP bytes in 16 blocks of 32, then one lock byte per block
OTP_BLOCK_BYTES = OTP_SIZE // OTP_BLOCKS


def otp_line(options: OptionBytes) -> str:
    """How many OTP blocks hold data and how many are locked."""
    data = options.otp
    used = sum(1 for i in range(OTP_BLOCKS)
               if data[i * OTP_BLOCK_BYTES:(i + 1) * OTP_BLOCK_BYTES].count(b"\xff") != OTP_BLOCK_BYTES)
    locked = sum(1 for i in range(OTP_BLOCKS) if data[OTP_SIZE + i] != 0xFF)
    return f"OTP        {used} of {OTP_BLOCKS} blocks programmed, {locked} locked"


# ---------------------------------------------------------------------------------------------------------
@cli.command()
@_state_option
@click.pass_context
def reset(ctx: click.Context, state: Optional[str]) -> None:
    """Make the chip factory-new: erased flash, factory option bytes and OTP, no faults, 512 KB."""
    directory = state_dir(_directory(ctx, state))
    reset_state(directory)
    click.echo(f"factory-new STM32F407VE in {directory}")


@cli.command()
@_state_option
@click.option("--clear", is_flag=True, help="Remove every fault first (option bytes back to factory values).")
@click.argument("specs", nargs=-1, metavar="SPEC...")
@click.pass_context
def fault(ctx: click.Context, state: Optional[str], clear: bool, specs: Sequence[str]) -> None:
    """Add faults, e.g. `f4load-sim fault wrp=0-3 iwdg=5ms`; see `f4load-sim faults`."""
    if not clear and not specs:
        raise click.UsageError("give at least one fault (see `f4load-sim faults`) or --clear")
    directory = state_dir(_directory(ctx, state))
    if clear:
        clear_faults(directory)
    if specs:
        now = inject_faults(directory, " ".join(specs))
    else:
        now = read_stored_faults(directory)
    text = now.to_text()
    click.echo(f"faults in {directory}: {text or 'none'}")


@cli.command("faults")
def list_faults() -> None:
    """List the known faults with one-line meanings."""
    width = max(len(kind.usage) for kind in FAULT_KINDS)
    for kind in FAULT_KINDS:
        example = f", e.g. {kind.name}={kind.example}" if kind.example else ""
        where = " [option bytes]" if kind.option_byte else ""
        click.echo(f"{kind.usage:<{width}}  {kind.meaning}{example}{where}")
    click.echo(f"Several faults: separate with spaces (or ';' in {FAULTS_ENV}).")


@cli.command()
@_state_option
@click.option("--port", type=click.IntRange(0, 65535), default=7184, show_default=True,
              help="TCP port (0: any free port; the one chosen is printed).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The protocol has no authentication: anything else than 127.0.0.1 "
                   "lets whoever reaches the port drive the boards.")
@click.option("--board", "boards", metavar="NAME", multiple=True,
              help="Serve the named virtual board NAME (repeat for several; default: the default board, or "
                   "the --board given before `serve`).")
@click.option("--link", type=click.Choice(["stlink-v2", "stlink-v3"]), default="stlink-v2", show_default=True,
              help="The ST-Link in front of each board: an ST-Link/V2-1 (USB full speed) or an STLINK-V3 (high "
                   "speed); sets the firmware and the cost of every USB command.")
@click.argument("specs", nargs=-1, metavar="[FAULT...]")
@click.pass_context
def serve(ctx: click.Context, state: Optional[str], port: int, host: str, boards: Sequence[str], link: str,
          specs: Sequence[str]) -> None:
    """Run virtual boards, each an ST-Link in front of a virtual STM32F407, until stopped (SIGTERM, Ctrl-C),
    reachable over the ST-Link TCP server protocol: OpenOCD `-c "st-link backend tcp PORT"` (stlink-dap) or
    `-c "hla_stlink_backend tcp PORT"` (hla), pyocd and f4load `-u stlink-tcp:127.0.0.1:PORT`. FAULTs are added
    to every board for this run (as $F4LOAD_SIM_FAULTS); the flash is saved as it changes."""
    import logging
    import signal

    from f4load.sim.server import StLinkServer, open_boards

    root, group_board = ctx.obj
    names: List[Optional[str]] = list(boards) if boards else [group_board]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s f4load-sim: %(message)s", stream=sys.stderr)
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"{PROG}: warning: listening on {host}: the ST-Link TCP protocol has no authentication, "
                   "anyone who can reach this port can program and read the boards", err=True)
    server_boards = open_boards(names, state if state is not None else root, link, " ".join(specs))
    try:
        server = StLinkServer(server_boards, host, port)
    except BaseException:
        for board in server_boards:
            board.close()
        raise
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: server.stop())
    address, chosen = server.address
    for board in server_boards:
        click.echo(f"{board.label}: {board.directory}")
    click.echo(f"listening on {address}:{chosen}", )
    sys.stdout.flush()
    server.serve_forever()
    click.echo("stopped; boards saved")


# ---------------------------------------------------------------------------------------------------------
def _error(message: str) -> None:
    one_line = " ".join(str(message).split())
    click.echo(f"{PROG}: error: {one_line}", err=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point: run the command, turn every failure into one line on stderr and an exit status."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None, prog_name=PROG, standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        _error(exc.format_message())
        return 2
    except click.Abort:
        _error("aborted")
        return 1
    except click.ClickException as exc:
        _error(exc.format_message())
        return exc.exit_code
    except FaultSpecError as exc:
        _error(str(exc))
        return 2
    except SimStateError as exc:
        _error(str(exc))
        return 1
    except ServeError as exc:
        _error(str(exc))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as exc:  # never a traceback for the user; the message names the failure
        _error(f"internal error: {type(exc).__name__}: {exc}")
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
