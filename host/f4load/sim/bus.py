"""The virtual STM32F407's bus: the debugger's AHB-AP accesses and the core's MMIO, dispatched per region.

`ChipBus` holds the `Chip` methods (chip.py is the façade; the shared state is declared in base.py) that move
data: `bus_read`/`bus_write`/`bus_*_block` for the debugger (BusFault on error, no time except a stall on a
busy flash), the Unicorn MMIO callbacks for the core, and one handler per region shared by both
(`memory_map.py` says what backs each address). FLASH_SR reads by the core go through poll skipping and
FLASH_CR writes and flash stores through the BSY stall (flash_wait.py).

Core stores into flash: a `UC_HOOK_MEM_WRITE_PROT` hook that returns True makes Unicorn *perform* the store
into the read-only mapping (it does not skip it; unicorn 2.1.4). A core store into flash is therefore given to
the flash model and the bytes the model holds are put back before anything else can look at them
(`_flash_fixups`).

Bus errors of core data accesses (simplified ARMv7-M B1.5, B3.2.8): a load's fault is precise (PRECISERR,
BFARVALID, BFAR); a store's is imprecise (IMPRECISERR, stacked PC is the store's) unless ACTLR.DISDEFWBUF
turns the write buffer off (Cortex-M4 TRM 4.3.2), then precise. A precise fault at execution priority below 0
(FAULTMASK, or in HardFault) with CCR.BFHFNMIGN is ignored: CFSR and BFAR record it and the next instruction
runs (this is how the stub writes flash keys safely). Otherwise the fault escalates (exceptions.py).
Unmapped accesses always fault (no BFHFNMIGN there).

RDP level 1 with a debugger attached: the flash model reports `reads_blocked`; the chip then removes read and
execute permission from the flash mappings (core.py), so the core faults on flash too (RM0090 3.7.3) and the
debugger gets BusFault.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

from unicorn import UC_MEM_FETCH_PROT, UC_MEM_FETCH_UNMAPPED, Uc, UcError

from f4load.part import OPTION_BYTES, SRAM_START, SYSTEM_MEMORY
from f4load.registers import FLASH_BASE
from f4load.sim.base import ChipBase
from f4load.sim.debug import (
    ACTLR_DISDEFWBUF,
    CCR_BFHFNMIGN,
    CFSR_BFARVALID,
    CFSR_IACCVIOL,
    CFSR_IBUSERR,
    CFSR_IMPRECISERR,
    CFSR_PRECISERR,
    PPB_END,
    PPB_START,
)
from f4load.sim.flash import BusFault
from f4load.sim.memory_map import (
    OPTION_PAGE_SIZE,
    OTP_PAGE,
    OTP_PAGE_SIZE,
    PERIPH_BLOCK,
    PERIPH_END,
    PERIPH_START,
    check_access,
    flash_offset,
    option_bytes_read,
    otp_page_bytes,
    split_accesses,
)


class ChipBus(ChipBase):
    """The bus's part of `Chip` (see the module docstring)."""

    # ==========================================================================================================
    # The debugger's bus (AHB-AP). Raises BusFault; runs no time except where a flash access stalls.
    def bus_read(self, address: int, size: int) -> int:
        address &= 0xFFFF_FFFF
        check_access(address, size)
        kind = self._kind(address, size)
        if kind == "flash":
            if self.flash.reads_blocked:
                raise BusFault(f"flash read at {address:#010x} blocked: RDP level 1 with a debugger attached")
            self.flash_port.debugger_read(address)
            offset = flash_offset(address)
            return int.from_bytes(self.memory.flash[offset:offset + size], "little")
        if kind in ("ram", "sysmem"):
            return int.from_bytes(self.uc.mem_read(address, size), "little")
        if kind == "mmio":
            return self._io_read(address, size, core=False)
        raise BusFault(f"no memory at {address:#010x}")

    def bus_write(self, address: int, size: int, value: int) -> None:
        address &= 0xFFFF_FFFF
        check_access(address, size)
        value &= (1 << (8 * size)) - 1
        kind = self._kind(address, size)
        if kind == "flash" or kind == "sysmem":
            self.flash_port.debugger_store(address, size, value)
        elif kind == "ram":
            self.memory.write_ram(address, value.to_bytes(size, "little"))
        elif kind == "mmio":
            self._io_write(address, size, value, core=False)
        else:
            raise BusFault(f"no memory at {address:#010x}")

    def bus_read_block(self, address: int, length: int) -> bytes:
        address &= 0xFFFF_FFFF
        if length <= 0:
            return b""
        kind = self._kind(address, length)
        if kind == "flash" and not self.flash.reads_blocked:
            with _fault_at(address):
                self.flash_port.debugger_read(address)
            offset = flash_offset(address)
            return bytes(self.memory.flash[offset:offset + length])
        if kind in ("ram", "sysmem"):
            return bytes(self.uc.mem_read(address, length))
        out = bytearray()
        for chunk_address, size in split_accesses(address, length):
            with _fault_at(chunk_address):
                out += self.bus_read(chunk_address, size).to_bytes(size, "little")
        return bytes(out)

    def bus_write_block(self, address: int, data: bytes) -> None:
        address &= 0xFFFF_FFFF
        if not data:
            return
        if self._kind(address, len(data)) == "ram":
            self.memory.write_ram(address, data)
            return
        position = 0
        for chunk_address, size in split_accesses(address, len(data)):
            with _fault_at(chunk_address):
                self.bus_write(chunk_address, size, int.from_bytes(data[position:position + size], "little"))
            position += size

    def _kind(self, address: int, length: int) -> str:
        """What backs [address, address + length) (memory_map.region_kind)."""
        return self.memory.kind(address, length)

    # ==========================================================================================================
    # MMIO: one handler per region, shared by the core and the debugger.
    def _mmio_read(self, uc: Uc, offset: int, size: int, base: int) -> int:
        address = base + offset
        self._loop_io = True
        try:
            return self._io_read(address, size, core=True)
        except BusFault:
            self._core_bus_fault(address, precise=True)
            return 0

    def _mmio_write(self, uc: Uc, offset: int, size: int, value: int, base: int) -> None:
        address = base + offset
        self._loop_io = True
        try:
            self._io_write(address, size, value, core=True)
        except BusFault:
            self._core_bus_fault(address, precise=bool(self.scs.actlr & ACTLR_DISDEFWBUF))

    def _core_bus_fault(self, address: int, precise: bool) -> None:
        """A bus error on a core load or store to a peripheral (a wrong flash key, an unmodelled PPB
        register). A load's fault is precise; a store's only when ACTLR.DISDEFWBUF turns the write buffer off
        (Cortex-M4 TRM 4.3.2), else it is imprecise. A precise fault while the execution priority is below 0
        (FAULTMASK set, or in HardFault/NMI) with CCR.BFHFNMIGN set is ignored (ARMv7-M B3.2.8): CFSR and BFAR
        record it and the instruction completes (the store does nothing, a load reads 0)."""
        if not precise:
            self._core_fault(CFSR_IMPRECISERR)
            return
        if self.scs.ccr & CCR_BFHFNMIGN and self._priority_below_zero():
            self.scs.cfsr |= CFSR_PRECISERR | CFSR_BFARVALID
            self.scs.bfar = address
            return
        self._core_fault(CFSR_PRECISERR | CFSR_BFARVALID, bfar=address)

    def _io_read(self, address: int, size: int, core: bool) -> int:
        if PPB_START <= address < PPB_END:
            return self.scs.read(address, size, from_core=core)
        if PERIPH_START <= address < PERIPH_END:
            block = address & ~(PERIPH_BLOCK - 1)
            reader = self._periph_read.get(block)
            if reader is None:
                return 0  # not modelled: reads as an unclocked peripheral
            if block == FLASH_BASE:
                return self.flash_port.read_register(address - block, size, core)
            return reader(address - block, size)
        if OTP_PAGE <= address < OTP_PAGE + OTP_PAGE_SIZE:
            f_size = self.memory.flash_size if self.faults.f_size_kb is None else self.faults.f_size_kb * 1024
            page = otp_page_bytes(self.options.otp, self.unique_id, f_size, address, size)
            return int.from_bytes(page, "little")
        if OPTION_BYTES <= address < OPTION_BYTES + OPTION_PAGE_SIZE:
            return option_bytes_read(self.options.optcr, address, size)
        raise BusFault(f"no memory at {address:#010x}")

    def _io_write(self, address: int, size: int, value: int, core: bool) -> None:
        if PPB_START <= address < PPB_END:
            self.scs.write(address, value, size, from_core=core)
            return
        if PERIPH_START <= address < PERIPH_END:
            block = address & ~(PERIPH_BLOCK - 1)
            if block == FLASH_BASE:
                self.flash_port.write_register(address - block, size, value, core)
                return
            writer = self._periph_write.get(block)
            if writer is not None:
                writer(address - block, value, size)
            return
        if OTP_PAGE <= address < OTP_PAGE + OTP_PAGE_SIZE or OPTION_BYTES <= address < OPTION_BYTES + OPTION_PAGE_SIZE:
            if core:
                self.flash_port.core_store(address, size, value)
            else:
                self.flash_port.debugger_store(address, size, value)
            return
        raise BusFault(f"no memory at {address:#010x}")

    # ==========================================================================================================
    # Core stores into read-only memory (flash, system memory), bad accesses, memory as the core sees it.
    def _on_store_to_readonly(self, uc: Uc, access: int, address: int, size: int, value: int, _: object) -> bool:
        """Unicorn performs the store after this returns True; the model's bytes are restored afterwards."""
        memory = self.memory
        memory.apply_fixups()
        if address < SYSTEM_MEMORY:
            self.flash_port.core_store(address, size, value)
            memory.keep_flash(address, size)
        else:
            before = bytes(uc.mem_read(address, size))
            self.flash_port.core_store(address, size, value)
            memory.keep_system(address, before)
        return True

    def _on_bad_access(self, uc: Uc, access: int, address: int, size: int, value: int, _: object) -> bool:
        if access in (UC_MEM_FETCH_UNMAPPED, UC_MEM_FETCH_PROT):
            # The vendor/system regions (0xE000_0000..) are execute-never: a MemManage IACCVIOL; anything
            # else (CCM on the D-bus only, unmapped code) is an instruction bus error.
            bits = CFSR_IACCVIOL if address >= PPB_START else CFSR_IBUSERR
            self._stop = ("fault", bits, None)
        else:
            self._stop = ("fault", CFSR_PRECISERR | CFSR_BFARVALID, address)  # a data access: precise
        return False

    def _core_fault(self, cfsr: int, bfar: Optional[int] = None) -> None:
        """A bus error reported by an MMIO handler during a core access."""
        if self.in_run:
            self.stop_run(("fault", cfsr, bfar))
        else:
            self._take_fault(cfsr, bfar)

    def _core_read32(self, address: int) -> Optional[int]:
        """A word as the core would read it (None: bus error)."""
        if self._kind(address, 4) == "flash":
            if self.flash.reads_blocked:
                return None
            offset = flash_offset(address)
            return int.from_bytes(self.memory.flash[offset:offset + 4], "little")
        try:
            return int.from_bytes(self.uc.mem_read(address, 4), "little")
        except UcError:
            return None

    def _executable(self, address: int) -> bool:
        kind = self._kind(address, 2)
        if kind == "flash":
            return not self.flash.reads_blocked
        return kind == "sysmem" or (kind == "ram" and address >= SRAM_START)

    def _halfword(self, address: int) -> Optional[int]:
        try:
            return int.from_bytes(self.uc.mem_read(address, 2), "little")
        except UcError:
            return None


@contextmanager
def _fault_at(address: int) -> Iterator[None]:
    """A BusFault from one access of a block carries that access's address (a probe reports where it failed)."""
    try:
        yield
    except BusFault as fault:
        if fault.address is None:
            fault.address = address
        raise
