"""Which debug probe: the `--probe` choice, made the way pyocd, probe-rs and esptool make it.

    auto            the one real probe attached (the default); none, or several, is an error that says what
                    was found and what to type
    all             every real probe attached: several boards at once (f4load.boards)
    sim, sim:NAME   the virtual STM32F407 (pyocd probe `f4sim`), or the named virtual board NAME (its own
                    state and unique ID; several can run at once)
    UID             a pyocd probe unique ID, or a unique part of it (`f4load probes`); `TYPE:ID` asks one
                    pyocd probe plugin only (e.g. `stlink:066D...`, `f4sim:a`)

The default is `$F4LOAD_PROBE`, else `auto`. The virtual chip is never chosen unless asked for by name: a user
with a board who types `f4load app.bin` programs that board, or is told that none is attached.

Probes are found through pyocd's probe aggregator (every installed pyocd probe plugin: ST-Link, CMSIS-DAP,
J-Link, ...) rather than `ConnectHelper`, which prints its messages on stdout and, with several probes, asks
on stdin which one to use. pyocd is imported only when a probe is looked for, so `f4load --help` stays fast.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

from f4load.errors import ConnectError, UsageError

PROBE_ENV = "F4LOAD_PROBE"
AUTO = "auto"
ALL = "all"
SIM = "sim"
SIM_PLUGIN = "f4sim"  # the virtual chip's pyocd probe plugin (f4load.sim.probe)
SIM_DESCRIPTION = "virtual STM32F407"

NO_PROBE_HINT = ("`f4load probes` lists what pyocd sees: check the USB cable and, on Linux, the udev rules that "
                 "give you access to the probe; --probe sim (or F4LOAD_PROBE=sim) uses the virtual STM32F407 "
                 "instead")


@dataclass(frozen=True)
class ProbeInfo:
    """A real probe found attached."""
    uid: str
    vendor: str
    product: str

    def describe(self) -> str:
        return f"{self.product} ({self.vendor}) {self.uid}"


def default_spec() -> str:
    """The probe used when none is given: $F4LOAD_PROBE, else `auto`."""
    return os.environ.get(PROBE_ENV, "").strip() or AUTO


def is_sim(spec: str) -> bool:
    """Whether `spec` names the virtual chip (`sim`, `sim:NAME`, or pyocd's `f4sim`, `f4sim:NAME`)."""
    head = spec.split(":", 1)[0].lower()
    return head in (SIM, SIM_PLUGIN)


def sim_board(spec: str) -> Optional[str]:
    """The named virtual board of a `sim:NAME` spec, None for the default board."""
    _, _, name = spec.partition(":")
    return name or None


def pyocd_unique_id(spec: str) -> str:
    """What pyocd's probe aggregator is asked for: `f4sim[:NAME]` for the virtual chip, else `spec`."""
    if is_sim(spec):
        board = sim_board(spec)
        return SIM_PLUGIN if board is None else f"{SIM_PLUGIN}:{board}"
    return spec


def label(spec: str, probe: Any = None) -> str:
    """How a summary line names the probe: "virtual STM32F407 (sim:a)", or the real probe's product and uid."""
    if is_sim(spec):
        board = sim_board(spec)
        return f"{SIM_DESCRIPTION} ({SIM if board is None else f'{SIM}:{board}'})"
    if probe is not None:
        return f"{_safe(probe, 'product_name') or 'probe'} {_safe(probe, 'unique_id') or spec}"
    return spec


def _safe(probe: Any, name: str) -> str:
    try:
        return str(getattr(probe, name))
    except Exception:  # noqa: BLE001 - a probe that cannot say its name still gets listed
        return ""


def attached() -> List[Any]:
    """The real probes attached (pyocd DebugProbe objects). The virtual chip is never among them: its plugin
    answers only when asked for by name."""
    from pyocd.core import exceptions as pyocd_errors
    from pyocd.probe.aggregator import DebugProbeAggregator

    try:
        return list(DebugProbeAggregator.get_all_connected_probes())
    except pyocd_errors.Error as error:
        raise ConnectError(f"cannot list the debug probes: {_one_line(error)}") from None


def describe_all(probes: Sequence[Any]) -> List[ProbeInfo]:
    return [ProbeInfo(_safe(p, "unique_id"), _safe(p, "vendor_name"), _safe(p, "product_name")) for p in probes]


def _listing(probes: Sequence[Any]) -> str:
    return "; ".join(info.describe() for info in describe_all(probes))


def expand(specs: Sequence[str]) -> List[str]:
    """The boards to work on, from the --probe values given (none: the default). `all` becomes every real
    probe attached; `auto` stays `auto` when it is the only choice (the session resolves it), else it becomes
    the one attached probe. Duplicates are dropped. ConnectError when `all`/`auto` find nothing to use."""
    given = [s.strip() for s in specs if s.strip()] or [default_spec()]
    if given == [AUTO]:
        return given
    out: List[str] = []
    for spec in given:
        if spec.lower() == ALL:
            found = attached()
            if not found:
                raise ConnectError(f"--probe all: no debug probe is attached; {NO_PROBE_HINT}")
            out += [info.uid for info in describe_all(found)]
        elif spec.lower() == AUTO:
            out.append(_uid(find(AUTO)))
        else:
            out.append(spec)
    return list(dict.fromkeys(out))


def _uid(probe: Any) -> str:
    return _safe(probe, "unique_id")


def find(spec: str) -> Any:
    """The pyocd DebugProbe for one `--probe` value (not `all`). ConnectError, one line, when there is none or
    when the choice is ambiguous; the message lists what is attached and how to choose."""
    from pyocd.core import exceptions as pyocd_errors
    from pyocd.probe.aggregator import DebugProbeAggregator

    if spec.lower() == ALL:
        raise UsageError("--probe all means several boards: give it on the command line (f4load runs one worker "
                         "per board), or open one Session per probe")
    if spec.lower() == AUTO:
        found = attached()
        if not found:
            raise ConnectError(f"no debug probe found; {NO_PROBE_HINT}")
        if len(found) > 1:
            raise ConnectError(f"{len(found)} debug probes are attached: {_listing(found)}; choose one with "
                               "--probe UID (or F4LOAD_PROBE), or program them all with --probe all")
        return found[0]
    uid = pyocd_unique_id(spec)
    try:
        found = list(DebugProbeAggregator.get_all_connected_probes(unique_id=uid))
    except pyocd_errors.Error as error:
        raise ConnectError(f"probe {spec}: {_one_line(error)}") from None
    if len(found) > 1:
        exact = [p for p in found if _uid(p).lower() == uid.lower()]
        if len(exact) != 1:
            raise ConnectError(f"--probe {spec} matches {len(found)} probes: {_listing(found)}; give more of the "
                               "unique ID")
        found = exact
    if not found:
        others = attached() if not is_sim(spec) else []
        seen = f"attached: {_listing(others)}" if others else "no probe is attached"
        raise ConnectError(f"no debug probe matches {spec!r} ({seen}); {NO_PROBE_HINT}")
    return found[0]


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
