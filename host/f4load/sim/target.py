"""The virtual STM32F407's pyocd target: f4load's own target types, optionally with another flash algorithm.

The f4sim board (`SimProbe.create_associated_board`) is an `f4load_stm32f407xe` / `f4load_stm32f407xg`
(`f4load.pyocd_targets`, chosen from the flash size in the state directory): the real memory map (RM0090 2.3,
Table 5) and f4load's RAM stub as pyocd's flash algorithm, as a user with a real board and
`examples/pyocd_user.py` gets it.

The session option `f4sim.flm` names a CMSIS flash algorithm (.FLM) to use instead, e.g. the Keil peer:
`apply_flm_option` hands it to `f4load.sim.peer.use_flm`, which replaces the flash region with one that
carries the FLM through pyocd's own `PackFlashAlgo` and `Flash` (before the session opens, so pyocd builds
the `Flash` itself).
"""
from __future__ import annotations

from typing import Any, Optional

from pyocd.core.exceptions import TargetSupportError

from f4load.sim.probe import FLM_OPTION


def apply_flm_option(target: Any, flm: Optional[str]) -> None:
    """Make `target`'s main flash use the .FLM at `flm` (nothing if `flm` is empty). Any failure to use the
    file is one line for the user: TargetSupportError("f4sim.flm: cannot use <path>: <reason>")."""
    if not flm:
        return
    from f4load.sim.peer import use_flm

    try:
        use_flm(target, flm)
    except Exception as error:  # noqa: BLE001 - any failure to use the file is one line for the user
        reason = " ".join(str(error).split()) or type(error).__name__
        raise TargetSupportError(f"{FLM_OPTION}: cannot use {flm}: {reason}") from None
