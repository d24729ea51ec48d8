"""The virtual STM32F407's bus: what answers each address, for the debugger's AHB-AP and for the core.

`Bus` dispatches every access by region (`memory_map.py` says what backs each address): flash and RAM go to
`Memory`, FLASH registers and stores into flash to the `FlashPort` (which makes them wait while BSY=1), the
PPB to the `SystemControlSpace`, the other peripherals to the handlers the chip wired onto the memory map
(`periph_read`/`periph_write`: one pair per 1 KB block, RM0090 Table 1; a block without one reads 0, as an
unclocked peripheral), the OTP page and the option bytes to read-only views of the option image.

Two masters share it:
- The debugger (`read`/`write`/`read_block`/`write_block`, the chip's `bus_*`): a failed access raises
  BusFault; no time passes except while a flash access stalls on a busy flash.
- The core (Unicorn): MMIO callbacks for the peripheral regions, a `UC_HOOK_MEM_WRITE_PROT` hook for stores
  into flash and system memory (`memory.py` explains the fixups that hook needs), a hook for unmapped and
  forbidden accesses. A failed core access ends the core's run with a fault (`CoreSide`).

Bus errors of core data accesses (simplified ARMv7-M B1.5, B3.2.8): a load's fault is precise (PRECISERR,
BFARVALID, BFAR); a store's is imprecise (IMPRECISERR, stacked PC is the store's) unless ACTLR.DISDEFWBUF
turns the write buffer off (Cortex-M4 TRM 4.3.2), then precise. A precise fault at execution priority below 0
(FAULTMASK, or in HardFault) with CCR.BFHFNMIGN is ignored: CFSR and BFAR record it and the next instruction
runs (this is how the stub writes flash keys safely). Otherwise the fault escalates (exceptions.py).
Unmapped accesses always fault (no BFHFNMIGN there).

RDP level 1 with a debugger attached: the flash model reports `reads_blocked`; the core then runs with flash
unreadable (`Memory.protect_flash`), so it faults on flash too (RM0090 3.7.3), and the debugger gets BusFault.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional, Protocol, Tuple

from unicorn import (
    UC_HOOK_MEM_FETCH_PROT,
    UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ_PROT,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE_PROT,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_MEM_FETCH_PROT,
    UC_MEM_FETCH_UNMAPPED,
    Uc,
    UcError,
)

from f4load.part import OPTION_BYTES, SRAM_START, SYSTEM_MEMORY
from f4load.registers import FLASH_BASE
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
    SystemControlSpace,
)
from f4load.sim.flash import BusFault, FlashInterface, OptionBytes
from f4load.sim.flash_port import FlashPort
from f4load.sim.memory import Memory
from f4load.sim.memory_map import (
    MMIO_REGIONS,
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

PeriphRead = Callable[[int, int], int]  # (offset, size) -> value
PeriphWrite = Callable[[int, int, int], None]  # (offset, value, size)


class CoreSide(Protocol):
    """What the bus needs of the core (core.py) when a core access goes wrong or touches a peripheral."""

    loop_io: bool  # set on every MMIO access: an idle loop is one without I/O

    def stop_run(self, reason: Tuple) -> None:
        """End the run after the current access (a fault the core then takes)."""

    def abort_access(self, reason: Tuple) -> None:
        """The access in progress fails and Unicorn ends the run with an error; `reason` says why."""

    def priority_below_zero(self) -> bool:
        """Execution priority -1 or -2 (FAULTMASK, or in HardFault or NMI)."""


class Bus:
    """Region dispatch for the debugger and the core (module docstring)."""

    def __init__(self, memory: Memory, flash: FlashInterface, flash_port: FlashPort, scs: SystemControlSpace,
                 core: CoreSide, periph_read: Dict[int, PeriphRead], periph_write: Dict[int, PeriphWrite],
                 options: OptionBytes, unique_id: bytes, f_size: int) -> None:
        self.memory = memory
        self._flash = flash
        self._flash_port = flash_port
        self._scs = scs
        self._core = core
        self._periph_read = periph_read
        self._periph_write = periph_write
        self._options = options
        self._unique_id = unique_id
        self._f_size = f_size  # what F_SIZE reads (bytes; a fault may make it lie)
        uc = memory.uc
        for base, size in MMIO_REGIONS:
            uc.mmio_map(base, size, self._mmio_read, base, self._mmio_write, base)
        uc.hook_add(UC_HOOK_MEM_WRITE_PROT, self._on_store_to_readonly)
        uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED | UC_HOOK_MEM_FETCH_UNMAPPED
                    | UC_HOOK_MEM_FETCH_PROT | UC_HOOK_MEM_READ_PROT, self._on_bad_access)

    # ==========================================================================================================
    # The debugger's bus (AHB-AP). Raises BusFault; runs no time except where a flash access stalls.
    def read(self, address: int, size: int) -> int:
        address &= 0xFFFF_FFFF
        check_access(address, size)
        kind = self.memory.kind(address, size)
        if kind == "flash":
            if self._flash.reads_blocked:
                raise BusFault(f"flash read at {address:#010x} blocked: RDP level 1 with a debugger attached")
            self._flash_port.debugger_read(address)
            offset = flash_offset(address)
            return int.from_bytes(self.memory.flash[offset:offset + size], "little")
        if kind in ("ram", "sysmem"):
            return int.from_bytes(self.memory.read_ram(address, size), "little")
        if kind == "mmio":
            return self._io_read(address, size, core=False)
        raise BusFault(f"no memory at {address:#010x}")

    def write(self, address: int, size: int, value: int) -> None:
        address &= 0xFFFF_FFFF
        check_access(address, size)
        value &= (1 << (8 * size)) - 1
        kind = self.memory.kind(address, size)
        if kind == "flash" or kind == "sysmem":
            self._flash_port.debugger_store(address, size, value)
        elif kind == "ram":
            self.memory.write_ram(address, value.to_bytes(size, "little"))
        elif kind == "mmio":
            self._io_write(address, size, value, core=False)
        else:
            raise BusFault(f"no memory at {address:#010x}")

    def read_block(self, address: int, length: int) -> bytes:
        address &= 0xFFFF_FFFF
        if length <= 0:
            return b""
        kind = self.memory.kind(address, length)
        if kind == "flash" and not self._flash.reads_blocked:
            with _fault_at(address):
                self._flash_port.debugger_read(address)
            offset = flash_offset(address)
            return bytes(self.memory.flash[offset:offset + length])
        if kind in ("ram", "sysmem"):
            return self.memory.read_ram(address, length)
        out = bytearray()
        for chunk_address, size in split_accesses(address, length):
            with _fault_at(chunk_address):
                out += self.read(chunk_address, size).to_bytes(size, "little")
        return bytes(out)

    def write_block(self, address: int, data: bytes) -> None:
        address &= 0xFFFF_FFFF
        if not data:
            return
        if self.memory.kind(address, len(data)) == "ram":
            self.memory.write_ram(address, data)
            return
        position = 0
        for chunk_address, size in split_accesses(address, len(data)):
            with _fault_at(chunk_address):
                self.write(chunk_address, size, int.from_bytes(data[position:position + size], "little"))
            position += size

    # ==========================================================================================================
    # MMIO: one handler per region, shared by the core and the debugger.
    def _mmio_read(self, uc: Uc, offset: int, size: int, base: int) -> int:
        address = base + offset
        self._core.loop_io = True
        try:
            return self._io_read(address, size, core=True)
        except BusFault:
            self._core_bus_fault(address, precise=True)
            return 0

    def _mmio_write(self, uc: Uc, offset: int, size: int, value: int, base: int) -> None:
        address = base + offset
        self._core.loop_io = True
        try:
            self._io_write(address, size, value, core=True)
        except BusFault:
            self._core_bus_fault(address, precise=bool(self._scs.actlr & ACTLR_DISDEFWBUF))

    def _core_bus_fault(self, address: int, precise: bool) -> None:
        """A bus error on a core load or store to a peripheral (a wrong flash key, an unmodelled PPB
        register). A load's fault is precise; a store's only when ACTLR.DISDEFWBUF turns the write buffer off
        (Cortex-M4 TRM 4.3.2), else it is imprecise. A precise fault while the execution priority is below 0
        (FAULTMASK set, or in HardFault/NMI) with CCR.BFHFNMIGN set is ignored (ARMv7-M B3.2.8): CFSR and BFAR
        record it and the instruction completes (the store does nothing, a load reads 0). (MMIO callbacks run
        only inside a run, so the fault always ends one.)"""
        scs = self._scs
        if not precise:
            self._core.stop_run(("fault", CFSR_IMPRECISERR, None))
            return
        if scs.ccr & CCR_BFHFNMIGN and self._core.priority_below_zero():
            scs.cfsr |= CFSR_PRECISERR | CFSR_BFARVALID
            scs.bfar = address
            return
        self._core.stop_run(("fault", CFSR_PRECISERR | CFSR_BFARVALID, address))

    def _io_read(self, address: int, size: int, core: bool) -> int:
        if PPB_START <= address < PPB_END:
            return self._scs.read(address, size, from_core=core)
        if PERIPH_START <= address < PERIPH_END:
            block = address & ~(PERIPH_BLOCK - 1)
            if block == FLASH_BASE:  # the flash port needs to know who reads (poll skipping)
                return self._flash_port.read_register(address - block, size, core)
            reader = self._periph_read.get(block)
            if reader is None:
                return 0  # not modelled: reads as an unclocked peripheral
            return reader(address - block, size)
        if OTP_PAGE <= address < OTP_PAGE + OTP_PAGE_SIZE:
            page = otp_page_bytes(self._options.otp, self._unique_id, self._f_size, address, size)
            return int.from_bytes(page, "little")
        if OPTION_BYTES <= address < OPTION_BYTES + OPTION_PAGE_SIZE:
            return option_bytes_read(self._options.optcr, address, size)
        raise BusFault(f"no memory at {address:#010x}")

    def _io_write(self, address: int, size: int, value: int, core: bool) -> None:
        if PPB_START <= address < PPB_END:
            self._scs.write(address, value, size, from_core=core)
            return
        if PERIPH_START <= address < PERIPH_END:
            block = address & ~(PERIPH_BLOCK - 1)
            if block == FLASH_BASE:  # the flash port needs to know who writes (stalls)
                self._flash_port.write_register(address - block, value, size, core)
                return
            writer = self._periph_write.get(block)
            if writer is not None:
                writer(address - block, value, size)
            return
        if OTP_PAGE <= address < OTP_PAGE + OTP_PAGE_SIZE or OPTION_BYTES <= address < OPTION_BYTES + OPTION_PAGE_SIZE:
            if core:
                self._flash_port.core_store(address, size, value)
            else:
                self._flash_port.debugger_store(address, size, value)
            return
        raise BusFault(f"no memory at {address:#010x}")

    # ==========================================================================================================
    # Core stores into read-only memory (flash, system memory), bad accesses, memory as the core sees it.
    def _on_store_to_readonly(self, uc: Uc, access: int, address: int, size: int, value: int, _: object) -> bool:
        """Unicorn performs the store after this returns True; the model's bytes are restored afterwards."""
        memory = self.memory
        memory.apply_fixups()
        if address < SYSTEM_MEMORY:
            self._flash_port.core_store(address, size, value)
            memory.keep_flash(address, size)
        else:
            before = bytes(uc.mem_read(address, size))
            self._flash_port.core_store(address, size, value)
            memory.keep_system(address, before)
        return True

    def _on_bad_access(self, uc: Uc, access: int, address: int, size: int, value: int, _: object) -> bool:
        if access in (UC_MEM_FETCH_UNMAPPED, UC_MEM_FETCH_PROT):
            # The vendor/system regions (0xE000_0000..) are execute-never: a MemManage IACCVIOL; anything
            # else (CCM on the D-bus only, unmapped code) is an instruction bus error.
            bits = CFSR_IACCVIOL if address >= PPB_START else CFSR_IBUSERR
            self._core.abort_access(("fault", bits, None))
        else:
            self._core.abort_access(("fault", CFSR_PRECISERR | CFSR_BFARVALID, address))  # a data access: precise
        return False

    def core_read32(self, address: int) -> Optional[int]:
        """A word as the core would read it (None: bus error): vector table entries."""
        if self.memory.kind(address, 4) == "flash":
            if self._flash.reads_blocked:
                return None
            offset = flash_offset(address)
            return int.from_bytes(self.memory.flash[offset:offset + 4], "little")
        try:
            return int.from_bytes(self.memory.uc.mem_read(address, 4), "little")
        except UcError:
            return None

    def executable(self, address: int) -> bool:
        """Whether the core can fetch an instruction at `address` (an exception handler's address)."""
        kind = self.memory.kind(address, 2)
        if kind == "flash":
            return not self._flash.reads_blocked
        return kind == "sysmem" or (kind == "ram" and address >= SRAM_START)


@contextmanager
def _fault_at(address: int) -> Iterator[None]:
    """A BusFault from one access of a block carries that access's address (a probe reports where it failed)."""
    try:
        yield
    except BusFault as fault:
        if fault.address is None:
            fault.address = address
        raise
