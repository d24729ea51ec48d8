"""Drive the virtual STM32F407 with a peer's flash algorithm: Keil's STM32F4xx_2048.FLM, run by pyocd itself.

The peer is what a user gets from a CMSIS-Pack today: pyocd loads the FLM (an ELF with `FlashDevice` and the
entry points Init/UnInit/EraseSector/EraseChip/ProgramPage, CMSIS-Pack "Flash Programming Algorithm" spec)
into target RAM and calls its functions with the core registers, waiting for the BKPT at the return address
(`pyocd/flash/flash.py`). Nothing of the FLM is copied into this repository: it is read at run time from
`peer_flm_path()`.

Why `use_flm` exists. pyocd 0.46 turns an FLM into flash regions with `FlmFlashRegionBuilder`
(`pyocd/target/pack/flm_region_builder.py`): one subregion per sector-size range that the FLM declares,
clipped to the region. The 2 MB Keil algorithm also declares the bank-2 ranges from 0x0810_0000; clipped to
a 512 KB part they become `MemoryRange(0x0810_0000, end=0x0807_FFFF)`, whose constructor asserts
(end < start - 1) before the builder's own "is empty" check can skip it. On a 1 MB part the clipped range is
exactly empty and passes. So `use_flm` does the builder's job itself, with pyocd's own pieces and without
changing pyocd:

- `PackFlashAlgo(flm)` parses the FLM and `get_pyocd_flash_algo(page_size, ram)` lays it out in the
  default RAM exactly as the builder would (code at the top of SRAM, one or two page buffers, the stack below);
- the target's flash regions are replaced by one region of the same extent that carries that algo dict, with
  one subregion per run of equal sectors taken from `f4load.part` (the F4 sector map, RM0090 Table 5),
  checked against the sectors the FLM declares; page size, erased value and "erased sectors readable" come
  from the FLM as the builder sets them;
- a region that already has an algo dict is left alone by the builder, so `use_flm` can run before
  `session.open()`; after `open()` it also makes the region's `Flash` object (pyocd's `Flash` class) and gives
  the cores the new memory map, as `CoreSightTarget.create_flash` does.

After `use_flm`, `FileProgrammer`, `FlashLoader`, `FlashEraser` and `region.flash` use the Keil algorithm.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

from pyocd.core.memory_map import FlashRegion, MemoryRange, MemoryType
from pyocd.core.session import Session
from pyocd.core.soc_target import SoCTarget
from pyocd.target.pack.flash_algo import PackFlashAlgo

from f4load.part import FLASH_START, Sector, sectors_for

PEER_FLM_ENV = "F4LOAD_PEER_FLM"
PEER_FLM_NAME = "STM32F4xx_2048.FLM"
# host/f4load/sim/peer.py -> the repository root of the source checkout.
_REPO = Path(__file__).resolve().parents[3]


def peer_flm_candidate() -> Path:
    """Where the peer FLM is looked for: `$F4LOAD_PEER_FLM`, else `<repo>/../shared/peers/STM32F4xx_2048.FLM`."""
    configured = os.environ.get(PEER_FLM_ENV)
    if configured:
        return Path(configured)
    return _REPO.parent / "shared" / "peers" / PEER_FLM_NAME


def peer_flm_path() -> Optional[Path]:
    """The Keil STM32F4xx_2048.FLM if it is present (see `peer_flm_candidate`), else None."""
    candidate = peer_flm_candidate()
    return candidate if candidate.is_file() else None


def use_flm(session_or_target: Union[Session, SoCTarget], flm_path: Union[str, Path]) -> FlashRegion:
    """Make the target's main flash use the FLM at `flm_path`, through pyocd's own PackFlashAlgo and Flash.

    `session_or_target` is a pyocd `Session` (opened or not) or its target. Call it before `session.open()`
    (pyocd then builds the `Flash` object itself) or after (this function builds it). The target's flash
    regions must cover the F4's main flash from 0x0800_0000 (512 KB or 1 MB), as the f4sim targets do.

    Returns the new flash region ("flash"): sector subregions from `f4load.part`, `region.algo` the pyocd
    algo dict built from the FLM, `region.flash` the `Flash` once the target is open.
    Raises ValueError when the FLM's sectors disagree with the part's, and pyocd's FlashAlgoException when
    the file is not a usable FLM or does not fit in the default RAM.
    """
    target = session_or_target.target if isinstance(session_or_target, Session) else session_or_target
    if target is None:
        raise ValueError("the pyocd session has no target (no probe was chosen)")
    memory_map = target.memory_map
    old_regions = [r for r in memory_map.iter_matching_regions(type=MemoryType.FLASH)]
    if not old_regions:
        raise ValueError("the target has no flash region")
    start = min(r.start for r in old_regions)
    end = max(r.end for r in old_regions)
    if start != FLASH_START:
        raise ValueError(f"the target's flash starts at {start:#010x}, not at {FLASH_START:#010x}")
    sectors = sectors_for(end + 1 - start)

    pack_algo = PackFlashAlgo(str(flm_path))
    _check_sectors(pack_algo, sectors, Path(flm_path).name)
    ram = memory_map.get_default_region_of_type(MemoryType.RAM)
    if ram is None:
        raise ValueError("the target has no default RAM region to run the flash algorithm in")
    page_size = pack_algo.page_size
    algo = pack_algo.get_pyocd_flash_algo(page_size, ram)

    region = _flash_region(pack_algo, algo, start, end, sectors, old_regions[0], str(flm_path))
    was_open = any(r.flash is not None for r in old_regions)
    if was_open:
        _release_old_flash(target, old_regions)
    for old in old_regions:
        memory_map.remove_region(old)
    memory_map.add_region(region)
    if was_open:
        flash = region.flash_class(target, region.algo)
        flash.region = region
        region.flash = flash
        _update_core_memory_maps(target)
    return region


def _sector_runs(sectors: List[Sector]) -> List[Tuple[int, int, int]]:
    """(start, end inclusive, sector size) of each run of equal sectors."""
    runs: List[Tuple[int, int, int]] = []
    for sector in sectors:
        if runs and runs[-1][2] == sector.size:
            runs[-1] = (runs[-1][0], sector.end - 1, sector.size)
        else:
            runs.append((sector.start, sector.end - 1, sector.size))
    return runs


def _check_sectors(pack_algo: PackFlashAlgo, sectors: List[Sector], name: str) -> None:
    """Every sector of the part must lie in an FLM range of the same sector size, at a multiple of it."""
    ranges = list(pack_algo.iter_sector_size_ranges())
    for sector in sectors:
        found = [(r, size) for r, size in ranges if r.contains_range(MemoryRange(sector.start, sector.end - 1))]
        if not found or found[0][1] != sector.size or (sector.start - found[0][0].start) % sector.size:
            declared = f"{found[0][1] // 1024} KB sectors" if found else "no sector"
            raise ValueError(f"{name} declares {declared} at {sector.start:#010x}, where the part has sector "
                             f"{sector.index} of {sector.size // 1024} KB")


def _flash_region(pack_algo: PackFlashAlgo, algo: Dict[str, Any], start: int, end: int, sectors: List[Sector],
                  template: FlashRegion, flm: str) -> FlashRegion:
    """One region for main flash with a subregion per sector size, as FlmFlashRegionBuilder would make it."""
    erased = pack_algo.flash_info.value_empty
    page_size = pack_algo.page_size
    region = FlashRegion(
        name="flash", start=start, end=end,
        sector_size=max(s.size for s in sectors), page_size=page_size, erased_byte_value=erased,
        is_boot_memory=True, erase_all_weight=template.erase_all_weight, algo=algo, flm=flm,
        # An FLM with a Verify function is taken to fault on erased reads; the Keil one has none.
        are_erased_sectors_readable="Verify" not in pack_algo.symbols)
    for run_start, run_end, size in _sector_runs(sectors):
        region.submap.add_region(FlashRegion(
            name=f"flash_{size:#x}", start=run_start, end=run_end, sector_size=size,
            page_size=min(page_size, size), erased_byte_value=erased, algo=algo))
    return region


def _release_old_flash(target: Any, old_regions: List[FlashRegion]) -> None:
    """If one of the replaced regions' algorithms is loaded and inited, uninit it the way pyocd would."""
    context = target.session.context_state
    current = getattr(context, "current_flash_algo", None)
    if current is not None and any(current is r.flash for r in old_regions):
        current.cleanup()
    for old in old_regions:
        old.flash = None


def _update_core_memory_maps(target: Any) -> None:
    """Each core keeps its own view of the memory map (CoreSightTarget.create_flash); rebuild it."""
    from pyocd.core.memory_map import MemoryMap

    for core in target.cores.values():
        regions = [m for m in target.memory_map
                   if m.attributes.get("pname") in (None, core.node_name)]
        core.memory_map = MemoryMap(regions)


__all__ = ["PEER_FLM_ENV", "peer_flm_candidate", "peer_flm_path", "use_flm"]
