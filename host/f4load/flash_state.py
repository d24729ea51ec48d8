"""What the flash holds after a batch of erase/program commands stopped part way.

When a stream ends early - Ctrl-C, a reset, a lost link - the user needs to know what state each sector is in:
rewritten, erased but not yet programmed, possibly half-erased (an erase cut by a reset: RM0090 gives no
guarantee about a sector whose erase did not complete), or untouched. `describe(steps, done, cut)` says it in
one phrase from the stub's commands: `steps` lists, per command in order, ("erase" | "program" | other, sector
index, or a tuple of them for a mass erase); `done` commands completed; `cut` is the 1-based number of the
command that was running when the work stopped and may be half done (None when the stop came between two
commands).

    describe([("erase", 0), ("program", 0), ("erase", 1), ("program", 1)], done=2, cut=3)
    -> "sector 0 rewritten, sector 1 possibly half-erased (erase it again)"
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

from f4load.option_bytes import sector_ranges

ERASE, PROGRAM = "erase", "program"
# (kind, sector): one command; a mass erase names every sector of the part.
Step = Tuple[str, Union[None, int, Tuple[int, ...]]]

# States, in the order they are listed.
REWRITTEN = "rewritten"
ERASED = "erased"
ERASED_NOT_PROGRAMMED = "erased (not yet programmed)"
PARTLY_PROGRAMMED = "partly programmed"
HALF_ERASED = "possibly half-erased (erase it again)"
HALF_PROGRAMMED = "partly programmed (the last write possibly half done)"
UNTOUCHED = "untouched"
_ORDER = [REWRITTEN, ERASED, PARTLY_PROGRAMMED, HALF_PROGRAMMED, ERASED_NOT_PROGRAMMED, HALF_ERASED, UNTOUCHED]


def sector_states(steps: Sequence[Step], done: int, cut: Optional[int]) -> Dict[int, str]:
    """{sector: state} for every sector the batch erases or programs (module docstring)."""
    erase_planned: Dict[int, bool] = {}
    erased: Dict[int, bool] = {}
    programs: Dict[int, List[int]] = {}  # sector -> [planned, completed]
    states: Dict[int, str] = {}
    for number, (kind, sectors) in enumerate(steps, 1):
        if sectors is None or kind not in (ERASE, PROGRAM):
            continue
        for sector in sectors if isinstance(sectors, tuple) else (sectors,):
            _step(kind, sector, number, done, cut, erase_planned, erased, programs, states)
    for sector in sorted(set(erase_planned) | set(programs)):
        if sector in states:
            continue
        planned, completed = programs.get(sector, [0, 0])
        if planned and completed == planned:
            states[sector] = REWRITTEN
        elif completed:
            states[sector] = PARTLY_PROGRAMMED
        elif erased.get(sector):
            states[sector] = ERASED_NOT_PROGRAMMED if planned else ERASED
        else:
            states[sector] = UNTOUCHED
    return states


def _step(kind: str, sector: int, number: int, done: int, cut: Optional[int], erase_planned: Dict[int, bool],
          erased: Dict[int, bool], programs: Dict[int, List[int]], states: Dict[int, str]) -> None:
    """Command `number` of `kind` on `sector`: what it did, given `done` and `cut`."""
    if kind == ERASE:
        erase_planned[sector] = True
        if number <= done:
            erased[sector] = True
        elif number == cut:
            states[sector] = HALF_ERASED
    else:
        counts = programs.setdefault(sector, [0, 0])
        counts[0] += 1
        if number <= done:
            counts[1] += 1
        elif number == cut:
            states[sector] = HALF_PROGRAMMED


def describe(steps: Sequence[Step], done: int, cut: Optional[int]) -> str:
    """One phrase: "sectors 0-2 rewritten, sector 3 possibly half-erased (erase it again), sectors 4-7
    untouched"; "" when the batch neither erases nor programs."""
    states = sector_states(steps, done, cut)
    groups: Dict[str, List[int]] = {}
    for sector, state in states.items():
        groups.setdefault(state, []).append(sector)
    parts = []
    for state in _ORDER:
        if state in groups:
            sectors = groups[state]
            word = "sectors" if len(sectors) > 1 else "sector"
            parts.append(f"{word} {sector_ranges(sectors)} {state}")
    return ", ".join(parts)


def changed(steps: Sequence[Step], done: int, cut: Optional[int]) -> bool:
    """Whether any erase or program of the batch started."""
    return any(s != UNTOUCHED for s in sector_states(steps, done, cut).values())


def complete(steps: Sequence[Step], done: int) -> bool:
    """Whether every erase and program of the batch is among the first `done` commands."""
    return all(state in (REWRITTEN, ERASED) for state in sector_states(steps, done, None).values())
