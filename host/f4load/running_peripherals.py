"""Peripherals an application left running that would get in the way of the flash stub.

Connected under reset, every peripheral is in its reset state. With `connect="halt"` or `"attach"` the
application ran, and what it started keeps running while the stub works with the core running:

* the window watchdog (WWDG_CR.WDGA, RM0090 20.6.1) cannot be disabled once enabled (only a reset clears
  WDGA) and resets the chip within ~50-130 ms at usual clocks, against up to 2 s for a sector erase.
  DBGMCU_APB1_FZ.DBG_WWDG_STOP (bit 11) freezes it only while the core is halted, and the stub runs with the
  core running, so freezing it does not help;
* an enabled DMA stream (DMAx_SxCR.EN, RM0090 10.5.5) may write into SRAM, where the stub, its buffers and
  its mailbox live.

Both are read before the stub is loaded (`read_running_peripherals`, decided by `peripheral_hazards`); either
one refuses the work with the fix: connect under reset.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

from f4load.registers import DMA1_BASE, DMA2_BASE, DMA_STREAMS, DMA_SXCR_EN, WWDG_CR, WWDG_CR_WDGA, dma_sxcr


@dataclass(frozen=True)
class RunningPeripherals:
    """The registers that show an application's WWDG or DMA still running (module docstring)."""
    wwdg_cr: int
    dma_sxcr: Dict[Tuple[int, int], int]  # (controller 1 or 2, stream 0-7) -> DMAx_SxCR


def read_running_peripherals(read32: Callable[[int], int]) -> RunningPeripherals:
    """Read WWDG_CR and the 16 DMA streams' SxCR through `read32` (a pyocd target's)."""
    streams = {(number, index): int(read32(dma_sxcr(base, index)))
               for number, base in ((1, DMA1_BASE), (2, DMA2_BASE)) for index in range(DMA_STREAMS)}
    return RunningPeripherals(wwdg_cr=int(read32(WWDG_CR)), dma_sxcr=streams)


def peripheral_hazards(state: RunningPeripherals) -> List[str]:
    """Why the stub cannot run with these peripherals as they are, one phrase per reason ([] when it can)."""
    hazards = []
    if state.wwdg_cr & WWDG_CR_WDGA:
        hazards.append(f"the window watchdog is enabled (WWDG_CR = {state.wwdg_cr:#04x}, WDGA set; RM0090 20): "
                       "it cannot be stopped and resets the chip within ~50-130 ms, an erase takes up to 2 s "
                       "(freezing it in DBGMCU only works while the core is halted, and the stub runs the core)")
    running = [f"DMA{number} stream {index}" for (number, index), cr in sorted(state.dma_sxcr.items())
               if cr & DMA_SXCR_EN]
    if running:
        hazards.append(f"{', '.join(running)} {'is' if len(running) == 1 else 'are'} enabled (SxCR.EN = 1, "
                       "RM0090 10): a DMA transfer may write into SRAM, where the stub and its buffers live")
    return hazards
