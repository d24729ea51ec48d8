"""One virtual clock for the host and the virtual chip, and the link models that charge probe commands to it.

Time is an integer number of picoseconds so that runs are exactly repeatable (62.5 ns core cycles at 16 MHz
are not whole nanoseconds). Every probe command advances the clock by its link cost; while the core is not
halted it runs for that long, so host transfers and target work really overlap.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Tuple

PS_PER_S = 10**12
PS_PER_US = 10**6
PS_PER_MS = 10**9


class VirtualClock:
    """Monotonic virtual time in picoseconds."""

    def __init__(self, now_ps: int = 0) -> None:
        self.now_ps = now_ps

    @property
    def seconds(self) -> float:
        return self.now_ps / PS_PER_S

    def advance(self, ps: int) -> None:
        if ps < 0:
            raise ValueError("virtual time cannot go backwards")
        self.now_ps += ps


@dataclass(frozen=True)
class LinkModel:
    """What one probe command costs.

    A USB probe answers each command after a fixed turnaround (USB frames, firmware); the data itself moves at
    the SWD clock, and one 32-bit SWD transfer takes about 54 SWD clocks (8 request + turnaround + 3 ack +
    32 data + parity + idle/turnaround). A command carries at most `max_payload` bytes; longer transfers are
    split into several commands.

    The only public per-command figure is an ST-Link V3 measurement of about 1 ms per round trip; we use it
    for both presets and let the SWD clock tell them apart.

    `swd_hz` is the probe's fastest SWD clock; the host asks for a clock (pyocd's `frequency` option,
    f4load's `--frequency`) and an ST-Link runs at the fastest of its fixed steps `swd_steps_hz` that does not
    exceed it (OpenOCD's stlink_usb.c and pyocd's stlink.py pick the same way): `at_swd_clock`.
    """
    name: str
    command_overhead_ps: int
    swd_hz: int
    clocks_per_word: int
    max_payload: int
    swd_steps_hz: Tuple[int, ...] = ()

    def at_swd_clock(self, requested_hz: float) -> LinkModel:
        """This link with the SWD clock the probe would pick for `requested_hz` (the slowest step when even
        that is above the request). A model without steps (ideal) ignores the request."""
        if not self.swd_steps_hz:
            return self
        fitting = [step for step in self.swd_steps_hz if step <= requested_hz]
        return replace(self, swd_hz=max(fitting) if fitting else min(self.swd_steps_hz))

    def cost_ps(self, words: int) -> int:
        """Cost of one command moving `words` 32-bit words (0 for a command with no data phase)."""
        return self.command_overhead_ps + (words * self.clocks_per_word * PS_PER_S) // self.swd_hz


LINK_MODELS: Dict[str, LinkModel] = {
    # ST-Link/V2: SWD up to 4 MHz in fixed steps (the SWD_FREQ table of OpenOCD's stlink_usb.c), 6 KB maximum
    # transfer per USB command.
    "stlink-v2": LinkModel("stlink-v2", 1 * PS_PER_MS, 4_000_000, 54, 6144,
                           (4_000_000, 1_800_000, 1_200_000, 950_000, 480_000, 240_000, 125_000, 100_000,
                            50_000, 25_000, 15_000, 5_000)),
    # ST-Link/V3: SWD up to 24 MHz (the steps its firmware reports), larger packets.
    "stlink-v3": LinkModel("stlink-v3", 1 * PS_PER_MS, 24_000_000, 54, 16384,
                           (24_000_000, 8_000_000, 3_300_000, 1_000_000, 200_000, 50_000, 5_000)),
    # No link cost at all: for tests that care only about function.
    "ideal": LinkModel("ideal", 0, 1_000_000_000, 1, 1 << 20),
}
DEFAULT_LINK_MODEL = "stlink-v2"

# The core runs from HSI at 16 MHz (the clock after reset, RM0090 6.2.2; the PLL is not modelled) and the model
# charges one cycle per instruction.
CORE_HZ = 16_000_000
CYCLE_PS = PS_PER_S // CORE_HZ  # 62_500 ps
