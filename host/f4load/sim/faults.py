"""Fault injection for the virtual STM32F407: one data class, read by the chip model.

(Owned by the faults/state work; see docs/sim.md. The field names below are the contract with chip.py and
flash.py.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional


@dataclass
class ResetDuring:
    """Reset the chip during the `nth` (1-based, counted since the session opened) flash operation."""
    operation: str  # "erase" (sector or mass) or "program" (one program write)
    nth: int = 1
    phase: str = "middle"  # "start" (nothing done yet) or "middle" (half done)
    cause: str = "brownout"  # "brownout" (BORRSTF|PORRSTF), "pin" (PINRSTF), "iwdg" (IWDGRSTF)


@dataclass
class Faults:
    # --- persistent chip conditions (applied to option bytes at power-on) ---
    write_protected: List[int] = field(default_factory=list)  # sectors whose nWRP bit is 0
    rdp_level1: bool = False
    hardware_watchdog: bool = False  # WDG_SW = 0: IWDG runs from reset
    # --- what "the application" does when it runs (at power-on, and after any reset that lets it run) ---
    iwdg_timeout_ms: Optional[float] = None  # the app starts the IWDG with this timeout (PR/RLR chosen to fit)
    sticky_sr: int = 0  # FLASH_SR error bits the application left set
    cr_locked_by_bad_key: bool = False  # the application wrote a wrong key to FLASH_KEYR
    # --- flash interface misbehaviour ---
    bsy_stuck: bool = False  # BSY never clears after STRT/program
    reset_during: List[ResetDuring] = field(default_factory=list)
    # --- link and board ---
    disconnect_after_commands: Optional[int] = None  # probe commands after which the link is lost
    supply_voltage: float = 3.3  # what the probe measures on VDD (TVCC); below 2.7 V x32 is out of spec
    flash_kb: int = 512  # 512 (xE) or 1024 (xG)
    clone: bool = False  # identity of a non-ST part claiming to be an F407
    max_timing: bool = False  # use DS8626 maximum erase/program times instead of typical
