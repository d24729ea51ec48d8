"""What one ST-Link USB command costs in virtual time: the link model of the virtual ST-Link (stlink.py).

On the ST-Link route every USB command - a 16-byte command block, then its data phase (OUT or IN) - is one
transaction, and each advances the virtual clock by

    latency + (16 + data bytes) / USB payload rate + SWD transfers x 54 clocks / SWD clock

while the core keeps running (the chip's `advance`). The three parts (docs/sim.md, "The ST-Link route"):

- **latency**: the round trip of one command (host stack, the USB schedule, the firmware's turnaround). USB
  schedules bulk transfers per frame: 1 ms on full speed, 125 us microframes on high speed (USB 2.0, 5.3.3 and
  8.4.3.1). The model charges one frame per command on an ST-Link/V2-1 (full speed) and two microframes on an
  STLINK-V3 (high speed). These are the model's choices from the frame timing, not measurements: neither
  OpenOCD nor pyOCD publishes a per-command figure.
- **USB payload**: the command block and the data phase at the bulk rate: full speed at most 19 packets of
  64 bytes per frame (1,216,000 B/s), high speed 13 packets of 512 bytes per microframe (53,248,000 B/s)
  (USB 2.0, Tables 5-9 and 5-10). The firmware buffers a whole transfer (its 6144-byte limit is that buffer),
  so USB and SWD times add up rather than overlap.
- **SWD**: the transfers the firmware makes on the wire (`stlink.py` counts them per command: setup of CSW,
  TAR, the data transfers, RDBUFF, a TAR reload at each 1 KB boundary), 54 SWD clocks each (8 request bits,
  turnaround, 3 acknowledge bits, 32 data bits, parity, idle cycles; ADIv5 4.2), at the clock the client chose
  (SWD_SET_FREQ on a V2, SET_COM_FREQ on a V3).

The in-process pyocd plugin (`probe.py`) charges `clock.LinkModel` per pyocd probe call instead; docs/bench.md
compares the two for the same job.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from f4load.sim.clock import PS_PER_S, PS_PER_US

COMMAND_BLOCK = 16  # bytes of every ST-Link command (the USB CDB)
SWD_CLOCKS_PER_TRANSFER = 54


@dataclass(frozen=True)
class UsbLink:
    """The cost of one ST-Link USB command on one kind of bus (see the module docstring)."""
    name: str
    usb_speed: str  # "full" (12 Mbit/s) or "high" (480 Mbit/s)
    latency_ps: int
    payload_bytes_per_s: int

    def usb_ps(self, data_bytes: int) -> int:
        """The command block and `data_bytes` of data phase at the bulk payload rate."""
        return ((COMMAND_BLOCK + data_bytes) * PS_PER_S) // self.payload_bytes_per_s

    @staticmethod
    def swd_ps(transfers: int, swd_hz: int) -> int:
        """`transfers` SWD transfers at `swd_hz`."""
        return (transfers * SWD_CLOCKS_PER_TRANSFER * PS_PER_S) // max(swd_hz, 1)

    def cost_ps(self, data_bytes: int, swd_transfers: int, swd_hz: int) -> int:
        """One command: latency, USB payload, SWD transfers."""
        return self.latency_ps + self.usb_ps(data_bytes) + self.swd_ps(swd_transfers, swd_hz)


FULL_SPEED = UsbLink("full speed", "full", 1000 * PS_PER_US, 19 * 64 * 1000)
HIGH_SPEED = UsbLink("high speed", "high", 250 * PS_PER_US, 13 * 512 * 8000)

# The USB bus of each ST-Link personality (stlink.py): the V2-1 is a full-speed device, the V3 a high-speed one.
USB_LINKS: Dict[str, UsbLink] = {"stlink-v2": FULL_SPEED, "stlink-v3": HIGH_SPEED}
