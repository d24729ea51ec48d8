"""The virtual STM32F407's storage: the flash array, RAM and system memory in Unicorn, and keeping the core's
translated code true to them.

`Memory` owns the main-flash bytes (one `bytearray`: the flash model programs and erases it, Unicorn maps it
twice, at 0x0800_0000 and at the boot alias 0x0), maps SRAM, CCM and system memory into Unicorn, and keeps
Unicorn's translation cache (and the core's instruction counts per block, `block_sizes`) in step with what
the host and the flash model write (`memory_map.py` says what backs each address):

- RAM the host writes (`write_ram`, `load`) is a dirty range, removed from the translation cache before the
  core runs again (`flush_stale_code`); so is flash the model changed (`flash_changed`), once a block from
  flash has been translated (`flash_code_cached`).
- Core stores into the read-only mappings (flash, system memory): a `UC_HOOK_MEM_WRITE_PROT` hook that returns
  True makes Unicorn *perform* the store (it does not skip it; unicorn 2.1.4). The bus gives the store to the
  flash model and notes here the bytes that must be there afterwards (`keep_flash`, `keep_system`); they are
  put back (`apply_fixups`) before anything else looks at them.
- RDP level 1 with a debugger attached: `protect_flash(True)` removes read and execute permission from both
  flash mappings, so the core faults on flash (RM0090 3.7.3).
"""
from __future__ import annotations

import ctypes
from typing import Dict, List, Optional, Tuple, Union

from unicorn import UC_PROT_ALL, UC_PROT_EXEC, UC_PROT_NONE, UC_PROT_READ, UC_PROT_WRITE, Uc

from f4load.part import CCM_SIZE, CCM_START, FLASH_START, SRAM_SIZE, SRAM_START, SYSTEM_MEMORY, SYSTEM_MEMORY_SIZE
from f4load.sim.memory_map import flash_offset, region_kind, system_memory_image


class Memory:
    """Flash bytes, Unicorn RAM and system memory, fixups and the translation cache (module docstring)."""

    def __init__(self, uc: Uc, flash: Union[bytes, bytearray]) -> None:
        self.uc = uc
        self.flash = bytearray(flash)
        self.flash_size = len(self.flash)
        self._flash_c = (ctypes.c_ubyte * self.flash_size).from_buffer(self.flash)
        pointer = ctypes.addressof(self._flash_c)
        uc.mem_map_ptr(FLASH_START, self.flash_size, UC_PROT_READ | UC_PROT_EXEC, pointer)
        uc.mem_map_ptr(0, self.flash_size, UC_PROT_READ | UC_PROT_EXEC, pointer)  # boot alias (BOOT0=0)
        uc.mem_map(SRAM_START, SRAM_SIZE, UC_PROT_ALL)
        uc.mem_map(CCM_START, CCM_SIZE, UC_PROT_READ | UC_PROT_WRITE)  # D-bus only: not executable
        uc.mem_map(SYSTEM_MEMORY, SYSTEM_MEMORY_SIZE, UC_PROT_READ | UC_PROT_EXEC)
        uc.mem_write(SYSTEM_MEMORY, system_memory_image())
        # Bytes to put back after Unicorn performed a core store into read-only memory: (flash offset, bytes),
        # or (-address, bytes) for system memory. The list object stays the same (the core checks it per block).
        self.fixups: List[Tuple[int, bytes]] = []
        self.dirty: List[Tuple[int, int]] = []  # RAM ranges written by the host since the core last ran
        self.flash_changed = False  # the flash model changed the flash since the core last ran
        self.flash_code_cached = False  # a block from flash has been translated since the last flush
        # (address, size) of a translated block -> (instructions, may store): core.scan_block, cached
        self.block_sizes: Dict[Tuple[int, int], Tuple[int, bool]] = {}
        self._flash_prot: Optional[int] = None

    def kind(self, address: int, length: int) -> str:
        """What backs [address, address + length) (memory_map.region_kind)."""
        return region_kind(address, length, self.flash_size)

    # --- the host's writes ------------------------------------------------------------------------------------
    def read_ram(self, address: int, length: int) -> bytes:
        """RAM or system memory as Unicorn holds it."""
        return bytes(self.uc.mem_read(address, length))

    def write_ram(self, address: int, data: bytes) -> None:
        """RAM written from outside the core's instruction stream (the debugger, an exception frame)."""
        self.uc.mem_write(address, bytes(data))
        self.dirty.append((address, address + len(data)))

    def load(self, address: int, data: bytes) -> None:
        """Put bytes into RAM or flash storage directly (tests, tools): no flash rules, no time."""
        if self.kind(address, len(data)) == "flash":
            offset = flash_offset(address)
            self.flash[offset:offset + len(data)] = data
            self.flush_all_code()
        else:
            self.write_ram(address, data)

    # --- core stores into read-only memory --------------------------------------------------------------------
    def keep_flash(self, address: int, size: int) -> None:
        """After the flash model took a core store into flash: its bytes go back over Unicorn's store."""
        offset = flash_offset(address)
        self.fixups.append((offset, bytes(self.flash[offset:offset + size])))

    def keep_system(self, address: int, before: bytes) -> None:
        """A core store into system memory: the bytes from before go back over Unicorn's store."""
        self.fixups.append((-address, before))  # negative: a Unicorn address, not a flash offset

    def apply_fixups(self) -> None:
        if not self.fixups:
            return
        fixups = list(self.fixups)
        del self.fixups[:]
        for where, data in fixups:
            if where >= 0:
                self.flash[where:where + len(data)] = data
            else:
                self.uc.mem_write(-where, data)

    # --- the translation cache --------------------------------------------------------------------------------
    def flush_stale_code(self) -> None:
        """Before the core runs: drop translated code of RAM the host wrote and of flash the model changed."""
        if self.flash_changed and self.flash_code_cached:
            self.flush_all_code()
        self.flash_changed = False
        if self.dirty:
            dirty, self.dirty = self.dirty, []
            for start, end in dirty:
                self.uc.ctl_remove_cache(start, end)
            self.block_sizes.clear()

    def flush_all_code(self) -> None:
        for start, size in ((0, self.flash_size), (FLASH_START, self.flash_size), (SRAM_START, SRAM_SIZE),
                            (SYSTEM_MEMORY, SYSTEM_MEMORY_SIZE)):
            self.uc.ctl_remove_cache(start, start + size)
        self.block_sizes.clear()
        self.flash_code_cached = False

    def protect_flash(self, blocked: bool) -> None:
        """RDP level 1 with a debugger attached (`blocked`): the core may neither read nor execute flash
        (RM0090 3.7.3)."""
        prot = UC_PROT_NONE if blocked else UC_PROT_READ | UC_PROT_EXEC
        if prot != self._flash_prot:
            self.uc.mem_protect(FLASH_START, self.flash_size, prot)
            self.uc.mem_protect(0, self.flash_size, prot)
            self._flash_prot = prot
            self.flush_all_code()
