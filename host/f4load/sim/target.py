"""pyocd target types for the virtual STM32F407 ("f4load_sim_f407ve" / "f4load_sim_f407vg").

The memory map is the real one (RM0090 2.3, Table 5): main flash at 0x0800_0000 with the F4 sector map from
`f4load.part`, SRAM1+SRAM2 at 0x2000_0000 (128 KB, contiguous) and the 64 KB CCM data RAM at 0x1000_0000.

Two facts of pyocd shape the map:
- pyocd loads a flash algorithm into the *first default RAM region*. The CCM RAM sits on the D-bus only, so
  the core cannot execute from it (RM0090 2.3.1); it is therefore marked `is_default=False` so pyocd never
  picks it for code.
- A `FlashRegion` has one sector size, so the F4's mixed sectors (16/64/128 KB) become one region per run of
  equal sectors, all sharing one algorithm.

By default the flash algorithm is pyocd's STM32F439 one, imported at run time (never copied): it drives the
same FLASH_KEYR/SR/CR registers, erases sectors 0-11 by SNB and programs x32 words. The session option
`f4sim.flm` names a CMSIS flash algorithm (.FLM) to use instead, e.g. the Keil peer or f4load's own stub;
it is placed at the start of SRAM like pyocd places any FLM.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple, Type

from pyocd.core.memory_map import FlashRegion, MemoryMap, RamRegion
from pyocd.coresight.coresight_target import CoreSightTarget

from f4load.part import CCM_SIZE, CCM_START, SRAM_SIZE, SRAM_START, Part, Sector, part_for_flash_kb
from f4load.sim.probe import FLM_OPTION

TARGET_TYPE_PREFIX = "f4load_sim_"
# Weight pyocd uses to choose between chip erase and sector erase; a mass erase of an F4 takes seconds.
CHIP_ERASE_WEIGHT = 15.0
# pyocd's "page" is the unit it hands to program_page; the borrowed algorithm's buffers are 4 KB apart.
PAGE_SIZE = 0x1000


def target_type_for_flash_kb(flash_kb: int) -> str:
    """The pyocd target type name of the virtual part with `flash_kb` KB of flash, e.g. "f4load_sim_f407ve"."""
    key, _part = part_for_flash_kb(flash_kb)
    return TARGET_TYPE_PREFIX + key[len("stm32"):]


def borrowed_flash_algo() -> Dict[str, Any]:
    """pyocd's own STM32F4 flash algorithm (the STM32F439 target's), looked up at run time."""
    from pyocd.target.builtin import target_STM32F439xx

    return dict(target_STM32F439xx.FLASH_ALGO)


def _runs_of_equal_sectors(sectors: List[Sector]) -> List[List[Sector]]:
    runs: List[List[Sector]] = []
    for sector in sectors:
        if runs and runs[-1][-1].size == sector.size:
            runs[-1].append(sector)
        else:
            runs.append([sector])
    return runs


def flm_flash_algo(path: str) -> Tuple[Dict[str, Any], int]:
    """A pyocd algorithm dict from the CMSIS flash algorithm (.FLM) at `path`, placed in SRAM, and its page size.

    (pyocd's own FLM region builder is not used: it asserts on an FLM whose sector table reaches beyond the
    region, e.g. a 2 MB algorithm on a 512 KB part. The sector map stays f4load.part's.)
    """
    from pyocd.core.exceptions import TargetSupportError
    from pyocd.target.pack.flash_algo import PackFlashAlgo

    try:
        pack_algo = PackFlashAlgo(path)
        algo = pack_algo.get_pyocd_flash_algo(pack_algo.page_size, RamRegion(start=SRAM_START, length=SRAM_SIZE))
    except Exception as error:  # noqa: BLE001 - any failure to use the file is one line for the user
        raise TargetSupportError(f"{FLM_OPTION}: cannot use {path}: {error or type(error).__name__}") from None
    if algo is None:
        raise TargetSupportError(f"{FLM_OPTION}: {path} does not fit in SRAM")
    return algo, pack_algo.page_size


def memory_map_for(part: Part, algo: Dict[str, Any], page_size: int = PAGE_SIZE) -> MemoryMap:
    """The pyocd memory map of `part`: flash regions per sector size, all with `algo` programming `page_size`
    bytes per call, SRAM (the default RAM), CCM (not default)."""
    regions: List[Any] = []
    for index, run in enumerate(_runs_of_equal_sectors(part.sectors)):
        regions.append(FlashRegion(
            name=f"flash{index}" if index else "flash",
            start=run[0].start,
            length=sum(s.size for s in run),
            sector_size=run[0].size,
            page_size=page_size,
            is_boot_memory=(index == 0),
            erase_all_weight=CHIP_ERASE_WEIGHT,
            algo=algo,
        ))
    regions.append(RamRegion(name="sram", start=SRAM_START, length=SRAM_SIZE))
    # CCM: data bus only, not executable, never a place for an algorithm (RM0090 2.3.1).
    regions.append(RamRegion(name="ccm", start=CCM_START, length=CCM_SIZE, access="rw", is_default=False))
    return MemoryMap(*regions)


class SimSTM32F407(CoreSightTarget):
    """The virtual STM32F407 as a pyocd target; subclasses fix the flash size."""

    VENDOR = "f4load"
    PART_FAMILIES = ["STM32F4", "STM32F407"]
    PART_NUMBER = "STM32F407 (virtual)"
    FLASH_KB = 512

    def __init__(self, session: Any) -> None:
        _key, part = part_for_flash_kb(self.FLASH_KB)
        flm = session.options.get(FLM_OPTION)
        if flm:
            super().__init__(session, memory_map_for(part, *flm_flash_algo(flm)))
        else:
            super().__init__(session, memory_map_for(part, borrowed_flash_algo()))


class SimSTM32F407VE(SimSTM32F407):
    PART_NUMBER = "STM32F407VE (virtual)"
    FLASH_KB = 512


class SimSTM32F407VG(SimSTM32F407):
    PART_NUMBER = "STM32F407VG (virtual)"
    FLASH_KB = 1024


SIM_TARGETS: Dict[str, Type[SimSTM32F407]] = {
    target_type_for_flash_kb(cls.FLASH_KB): cls for cls in (SimSTM32F407VE, SimSTM32F407VG)
}


def register_targets() -> None:
    """Make the virtual parts known to pyocd (`pyocd.target.TARGET`); safe to call more than once."""
    from pyocd.target import TARGET

    TARGET.update(SIM_TARGETS)

