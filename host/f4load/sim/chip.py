"""The virtual STM32F407: memory map, Cortex-M4 core (Unicorn), time, halting and resets.

`Chip` ties the models together (docs/sim.md): `flash.py` (FLASH interface, option bytes), `peripherals.py`
(RCC, IWDG, CRC), `debug.py` (PPB: SCS, DWT, FPB, ROM table, DBGMCU). The debugger reaches the bus through
`bus_read`/`bus_write`/`bus_*_block`; the core through Unicorn, whose MMIO callbacks use the same handlers.

Memory map (RM0090 2.3, f4load.part):
| range | backing | access rules |
|---|---|---|
| 0x0800_0000 main flash; 0x0 boot alias (BOOT0=0) | one buffer, mapped twice | read, execute; stores: flash model |
| 0x1000_0000 CCM, 64 KB | Unicorn RAM | read/write; executing faults (D-bus only, RM0090 2.3.1) |
| 0x1FFF_0000 system memory, 30 KB | Unicorn RAM | read, execute; stores go to the flash model (WRPERR) |
| 0x1FFF_7800 OTP, lock bytes, unique ID, F_SIZE | MMIO | read; stores go to the flash model |
| 0x1FFF_C000 option bytes | MMIO, from OptionBytes | read; stores go to the flash model (WRPERR) |
| 0x2000_0000 SRAM, 128 KB | Unicorn RAM | read/write/execute |
| 0x4000_0000..0x4007_FFFF peripherals | MMIO | FLASH, RCC, CRC, IWDG; the rest reads 0 (unclocked) |
| 0xE000_0000..0xE00F_FFFF PPB | MMIO | `debug.SystemControlSpace` |
Anything else: the debugger gets BusFault, the core a HardFault.

Unicorn facts this module relies on (measured with unicorn 2.1.4):
- A `UC_HOOK_MEM_WRITE_PROT` hook that returns True makes Unicorn *perform* the store into the read-only
  mapping (it does not skip it). A core store into flash is therefore given to the flash model and the bytes
  the model holds are put back before anything else can look at them (`_flash_fixups`).
- `emu_stop()` in a block hook stops before that block runs; in an MMIO callback or a memory hook it abandons
  the instruction, which runs again (access included) on the next `emu_start`. Poll skipping and bus stalls
  use that: the stalled load or store simply runs again later.
- BKPT arrives as `UC_HOOK_INTR` 7 with PC on the BKPT; SVC as 2 with PC after it; a branch to an EXC_RETURN
  value as 8 (EXCP_EXCEPTION_EXIT). WFI ends `emu_start` normally with PC after the WFI; WFE and YIELD end it
  with UC_ERR_INSN_INVALID and PC after them; UDF with UC_ERR_INSN_INVALID and PC on it.
- Unicorn keeps translated code after host-side writes: ranges the debugger writes, and flash whose contents
  the model changed, are removed from the translation cache before the core runs again.

Time (docs/sim.md): `advance(ps)` moves `clock.now_ps` forward by exactly `ps`, handling events (end of a flash
operation, IWDG expiry, a reset the flash model asks for) at their time. While it is not halted, sleeping,
locked up, in reset or stalled, the core runs one instruction per 62.5 ns cycle (16 MHz HSI). Instructions are
counted per translated block (`UC_HOOK_BLOCK`; the count comes from the Thumb-2 encoding, cached per block);
a block starts while any budget is left, so the core may run ahead of the clock by less than one block, and
that debt is paid from the next budget. MMIO callbacks see the time at the start of their block.

Poll skipping: when the core reads FLASH_SR and BSY is set, nothing the core can do changes that until the
flash operation ends, so the core's time jumps (inside the run) to the end of the operation or of the budget,
and the load returns the status at that time. While the IWDG counts, one jump is at most a quarter of the IWDG
timeout, so a loop that refreshes the watchdog between polls still refreshes it in time. A FLASH_CR write or a
flash store while BSY=1 stalls the core until BSY clears (RM0090 3.6): inside the budget the same jump, else the
run stops and the access runs again later; with `bsy_stuck` the stall lasts until a reset. Code fetched from
flash stalls the same way while an operation is in progress (single bank). The normal end of a flash operation
is therefore not a run boundary: the core sees it at its next flash access or block. Sleep (WFI/WFE) lasts
until a halt or a reset: no interrupts are modelled. An idle loop (see `_watch_loop`) skips to the end of the
budget.

Faults of the core (simplified ARMv7-M, B1.5): an unmapped or non-executable access, executing CCM, a bus
error from a peripheral (wrong flash key), an undefined instruction or a BKPT without C_DEBUGEN escalate to
HardFault: the 8-word basic frame is pushed (no FP context), LR = EXC_RETURN, PC from vector 3 of VTOR; CFSR,
HFSR and BFAR are set. Bus errors on stores are reported as IMPRECISERR but the stacked PC is the store's
(the model has no write buffer). A fault in the HardFault handler, an unreadable or invalid handler address,
or a stacking error locks the core up (DHCSR.S_LOCKUP, PC 0xFFFF_FFFE) until a reset or a debugger halt.
With DEMCR.VC_HARDERR and C_DEBUGEN the core halts (DFSR.VCATCH) on the first instruction of the handler.
SVC enters its handler the same way; exception return pops the frame. No interrupts, priorities or
FP lazy stacking.

Resets: `reset(cause)` with "por", "bor"/"brownout" (power: also the debug domain), "pin", "sysresetreq",
"iwdg" (system reset: flash, RCC, IWDG, CRC, SCB, core) and "vectreset" (core only). RCC_CSR flags come from
`peripherals.RESET_FLAGS_FOR_CAUSE`. After a reset the core starts from the vector table at 0x0 (erased flash:
PC 0xFFFF_FFFE, which locks the core up when it runs), unless NRST is held, or DEMCR.VC_CORERESET halts it
before the first instruction, or the debugger has a halt pending. When the core does start, the application's
effects from `faults` are applied at once (`_application_runs`): IWDG started, sticky SR bits, a bad FLASH_KEYR
write.

RDP level 1 with a debugger attached: the flash model reports `reads_blocked`; the chip then removes read and
execute permission from the flash mappings, so the core faults on flash too (RM0090 3.7.3) and the debugger
gets BusFault.
"""
from __future__ import annotations

import ctypes
import dataclasses
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple

from unicorn import (
    UC_ARCH_ARM,
    UC_ERR_INSN_INVALID,
    UC_HOOK_BLOCK,
    UC_HOOK_CODE,
    UC_HOOK_INTR,
    UC_HOOK_MEM_FETCH_PROT,
    UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ_PROT,
    UC_HOOK_MEM_READ_UNMAPPED,
    UC_HOOK_MEM_WRITE_PROT,
    UC_HOOK_MEM_WRITE_UNMAPPED,
    UC_MEM_FETCH_PROT,
    UC_MEM_FETCH_UNMAPPED,
    UC_MODE_MCLASS,
    UC_MODE_THUMB,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_NONE,
    UC_PROT_READ,
    UC_PROT_WRITE,
    Uc,
    UcError,
)
from unicorn import arm_const as arm

from f4load.part import (
    CCM_SIZE,
    CCM_START,
    F_SIZE,
    FLASH_START,
    KB,
    OPTION_BYTES,
    OTP_LOCK_SIZE,
    OTP_SIZE,
    OTP_START,
    SRAM_SIZE,
    SRAM_START,
    SYSTEM_MEMORY,
    SYSTEM_MEMORY_SIZE,
    UNIQUE_ID,
    Part,
    part_for_flash_kb,
)
from f4load.registers import CRC_BASE, FLASH_BASE, FLASH_KEYR, FLASH_SR, FLASH_SR_BSY, IWDG_BASE, RCC_BASE
from f4load.sim.clock import PS_PER_MS, VirtualClock
from f4load.sim.debug import (
    ACTLR_DISDEFWBUF,
    CCR_BFHFNMIGN,
    CFSR_BFARVALID,
    CFSR_IACCVIOL,
    CFSR_IBUSERR,
    CFSR_IMPRECISERR,
    CFSR_INVPC,
    CFSR_INVSTATE,
    CFSR_PRECISERR,
    CFSR_STKERR,
    CFSR_UNDEFINSTR,
    DEMCR_VC_CORERESET,
    DEMCR_VC_HARDERR,
    DFSR_BKPT,
    DFSR_HALTED,
    DFSR_VCATCH,
    HFSR_DEBUGEVT,
    HFSR_FORCED,
    PPB_END,
    PPB_START,
    SystemControlSpace,
)
from f4load.sim.faults import Faults
from f4load.sim.flash import BusFault, FlashInterface, OptionBytes
from f4load.sim.peripherals import RESET_FLAGS_FOR_CAUSE, CrcUnit, Iwdg, Rcc, iwdg_settings_for

if TYPE_CHECKING:
    from f4load.sim.state import ChipState

CYCLE_PS = 62_500  # one core cycle at 16 MHz (HSI)
# emu_start's "until": an odd address, never equal to a Thumb PC, so only our hooks end a run.
NEVER = 0xFFFF_FFFF
LOCKUP_PC = 0xFFFF_FFFE
XPSR_T = 1 << 24
XPSR_STKALIGN = 1 << 9
EXC_RETURN_THREAD_MSP = 0xFFFF_FFF9
EXC_RETURN_THREAD_PSP = 0xFFFF_FFFD
EXC_RETURN_HANDLER = 0xFFFF_FFF1
NMI = 2
HARDFAULT = 3
SVCALL = 11
# UC_HOOK_INTR numbers (QEMU's EXCP_*).
INTR_SWI = 2
INTR_BKPT = 7
INTR_EXCEPTION_EXIT = 8
INTR_PREFETCH_ABORT = 3
INTR_DATA_ABORT = 4
CFSR_NOCP = 1 << 19
CFSR_UNALIGNED = 1 << 24
_USAGE_FAULTS = {1: CFSR_UNDEFINSTR, 17: CFSR_NOCP, 18: CFSR_INVSTATE, 22: CFSR_UNALIGNED}
# Thumb hint instructions that end a Unicorn run.
WFI = 0xBF30
WFE = 0xBF20
YIELD = 0xBF10

PERIPH_START = 0x4000_0000
PERIPH_END = 0x4008_0000  # APB1, APB2 and AHB1 (RM0090 Table 1)
PERIPH_BLOCK = 0x400
OTP_PAGE = OTP_START  # 0x1FFF_7800: OTP, lock bytes, unique ID, F_SIZE (one 1 KB page)
OTP_PAGE_SIZE = 0x400
OPTION_PAGE_SIZE = 0x400
SYSTEM_AREA_END = 0x2000_0000  # system memory, OTP, option bytes: stores go to the flash model
RESET_CAUSES = ("por", "bor", "brownout", "pin", "sysresetreq", "iwdg", "vectreset")
POWER_RESETS = ("por", "bor", "brownout")
# Poll skipping with BSY stuck: the first jumps are 1 ms (what one ST-Link command costs, and the stub's
# timeout resolution), later ones 1/16 of the time polled so far.
STUCK_POLL_STEP_PS = 1 * PS_PER_MS
STUCK_POLL_GROWTH = 16
FLASH_SR_OFFSET = FLASH_SR - FLASH_BASE
BAD_FLASH_KEY = 0x0BAD_0BAD  # what the "application" of the cr_locked_by_bad_key fault writes to FLASH_KEYR

# DCRSR REGSEL numbering (ARMv7-M C1.6.3).
REGSEL_SP, REGSEL_LR, REGSEL_PC, REGSEL_XPSR, REGSEL_MSP, REGSEL_PSP = 13, 14, 15, 16, 17, 18
REGSEL_SPECIAL = 20  # CONTROL << 24 | FAULTMASK << 16 | BASEPRI << 8 | PRIMASK
REGSEL_FPSCR = 33
REGSEL_S0 = 64
_GP_REGS = [arm.UC_ARM_REG_R0 + i for i in range(13)] + [arm.UC_ARM_REG_SP, arm.UC_ARM_REG_LR]
_FRAME_REGS = [arm.UC_ARM_REG_R0, arm.UC_ARM_REG_R1, arm.UC_ARM_REG_R2, arm.UC_ARM_REG_R3, arm.UC_ARM_REG_R12,
               arm.UC_ARM_REG_LR]
_LOOP_REGS = [arm.UC_ARM_REG_R0 + i for i in range(13)] + [arm.UC_ARM_REG_SP, arm.UC_ARM_REG_LR,
                                                          arm.UC_ARM_REG_XPSR]

# Part identity of a clone (faults.clone): same DEV_ID, a REV_ID ST never shipped for the F40x/41x.
CLONE_REV_ID = 0x2001


def scan_block(code: bytes) -> Tuple[int, bool]:
    """(instructions, may store) of a straight run of Thumb-2 code.

    A halfword whose top five bits are 0b11101, 0b11110 or 0b11111 starts a 32-bit instruction (ARMv7-M
    A5.1). "May store" is conservative: 16-bit STR/STRH/STRB (immediate, register, SP-relative), PUSH, STM;
    32-bit load/store multiple/dual/exclusive, single stores and coprocessor stores with L=0 (A5.3).
    """
    count = i = 0
    stores = False
    n = len(code) - 1
    while i < n:
        hw = code[i] | code[i + 1] << 8
        if hw >> 11 >= 0b11101:
            if ((hw & 0xFE00) in (0xE800, 0xF800) or (hw & 0xEE00) == 0xEC00) and not hw & 0x10:
                stores = True
            i += 4
        else:
            top5, top7 = hw >> 11, hw >> 9
            if top5 in (0b01100, 0b01110, 0b10000, 0b10010, 0b11000) or top7 in (0b0101000, 0b0101001,
                                                                                0b0101010, 0b1011010):
                stores = True
            i += 2
        count += 1
    return max(count, 1), stores


def _system_memory_image() -> bytes:
    """30 KB standing in for ST's bootloader: a vector table (SP top of SRAM1, reset -> a `b .` loop at
    0x1FFF_0200) and zeros. Enough for "booting from system memory" to run something."""
    image = bytearray(SYSTEM_MEMORY_SIZE)
    image[0:4] = (SRAM_START + 0x5000).to_bytes(4, "little")
    image[4:8] = (SYSTEM_MEMORY + 0x200 + 1).to_bytes(4, "little")
    image[0x200:0x202] = (0xE7FE).to_bytes(2, "little")  # b .
    return bytes(image)


class Chip:
    """One STM32F405/407/415/417 (see the module docstring for the model and its approximations)."""

    def __init__(self, faults: Faults, state: Optional[ChipState] = None,
                 clock: Optional[VirtualClock] = None) -> None:
        if state is None:
            from f4load.sim.state import ChipState

            state = ChipState.factory_new(faults)
        self.faults = faults
        self.clock = clock if clock is not None else VirtualClock()
        _key, part = part_for_flash_kb(len(state.flash) // KB)
        if faults.clone:
            part = dataclasses.replace(part, rev_id=CLONE_REV_ID)
        self.part: Part = part
        self.options: OptionBytes = state.options
        self.unique_id = bytes(state.unique_id)

        # --- core and debug state (docs/sim.md) -------------------------------------------------------
        self.halted = False
        self.lockup = False
        self.sleeping = False
        self.dfsr = 0
        self.demcr = 0
        self.debugen = False
        self.reset_seen = False  # DHCSR.S_RESET_ST
        self.retired = False  # DHCSR.S_RETIRE_ST
        self._nrst = False
        self.active_exception = 0  # IPSR
        self._exception_stack: List[int] = []
        self._thumb = True  # EPSR.T
        self._core_ps = 0  # when the core's next instruction executes (may run ahead of the clock)
        self._idle_until: Optional[int] = None  # poll skipping: the core waits until then
        self._wait_flash = False  # stalled on a flash access while BSY=1
        self._stuck_since: Optional[int] = None  # when the core started polling a stuck BSY
        self._block_address = -1  # the translated block the core is executing
        self._bsy_read_block: Optional[int] = None  # the block whose SR read last saw BSY=1
        self._in_run = False
        self._stepping = False
        self._deadline = 0
        self._stop: Optional[Tuple] = None  # why the current run stopped (set by hooks)
        self._pending_reset: Optional[str] = None
        self._last_reset: Optional[Tuple[str, int, int]] = None
        self._resume_pc: Optional[int] = None  # an FPB breakpoint here is skipped once after a resume
        # counters for tests and tools
        self.instructions = 0
        self.resets: Dict[str, int] = {}
        self.poll_skips = 0
        self.idle_loops = 0

        # --- memory ---------------------------------------------------------------------------------
        self._flash_mem = bytearray(state.flash)
        self._flash_c = (ctypes.c_ubyte * len(self._flash_mem)).from_buffer(self._flash_mem)
        self._flash_size = len(self._flash_mem)
        self._flash_fixups: List[Tuple[int, bytes]] = []
        self._flash_code_cached = False  # a block from flash has been translated since the last flush
        self._flash_changed = False
        self._flash_prot: Optional[int] = None
        self._dirty: List[Tuple[int, int]] = []
        self._block_sizes: Dict[Tuple[int, int], Tuple[int, bool]] = {}
        self._bp_hooks: Dict[int, int] = {}
        self._iwdg_counting = True

        # --- models ---------------------------------------------------------------------------------
        self.flash = FlashInterface(self.clock, part, memoryview(self._flash_mem), self.options, faults)
        self.flash.request_reset = self.request_reset
        self.flash.on_operation = self._on_flash_operation
        self.on_flash_operation: Optional[Callable[[str, str], None]] = None  # for tools: (kind, phase)
        self.rcc = Rcc()
        self.iwdg = Iwdg()
        self.crc = CrcUnit(lambda: self.rcc.crc_enabled)
        self.uc = self._build_unicorn()
        self.scs = SystemControlSpace(self)
        self._periph_read: Dict[int, Callable[[int, int], int]] = {
            CRC_BASE: self.crc.read, RCC_BASE: self.rcc.read, IWDG_BASE: self._iwdg_read,
            FLASH_BASE: self._flash_register_read}
        self._periph_write: Dict[int, Callable[[int, int, int], None]] = {
            CRC_BASE: self.crc.write, RCC_BASE: self.rcc.write, IWDG_BASE: self._iwdg_write,
            FLASH_BASE: self._flash_register_write}

    # ==========================================================================================================
    # Unicorn setup
    def _build_unicorn(self) -> Uc:
        uc = Uc(UC_ARCH_ARM, UC_MODE_THUMB | UC_MODE_MCLASS)
        uc.ctl_set_cpu_model(arm.UC_CPU_ARM_CORTEX_M4)
        pointer = ctypes.addressof(self._flash_c)
        uc.mem_map_ptr(FLASH_START, self._flash_size, UC_PROT_READ | UC_PROT_EXEC, pointer)
        uc.mem_map_ptr(0, self._flash_size, UC_PROT_READ | UC_PROT_EXEC, pointer)  # boot alias (BOOT0=0)
        uc.mem_map(SRAM_START, SRAM_SIZE, UC_PROT_ALL)
        uc.mem_map(CCM_START, CCM_SIZE, UC_PROT_READ | UC_PROT_WRITE)  # D-bus only: not executable
        uc.mem_map(SYSTEM_MEMORY, SYSTEM_MEMORY_SIZE, UC_PROT_READ | UC_PROT_EXEC)
        uc.mem_write(SYSTEM_MEMORY, _system_memory_image())
        for base, size in ((OTP_PAGE, OTP_PAGE_SIZE), (OPTION_BYTES, OPTION_PAGE_SIZE),
                           (PERIPH_START, PERIPH_END - PERIPH_START), (PPB_START, PPB_END - PPB_START)):
            uc.mmio_map(base, size, self._mmio_read, base, self._mmio_write, base)
        uc.hook_add(UC_HOOK_BLOCK, self._on_block)
        uc.hook_add(UC_HOOK_INTR, self._on_interrupt)
        uc.hook_add(UC_HOOK_MEM_WRITE_PROT, self._on_store_to_readonly)
        uc.hook_add(UC_HOOK_MEM_READ_UNMAPPED | UC_HOOK_MEM_WRITE_UNMAPPED | UC_HOOK_MEM_FETCH_UNMAPPED
                    | UC_HOOK_MEM_FETCH_PROT | UC_HOOK_MEM_READ_PROT, self._on_bad_access)
        return uc

    # ==========================================================================================================
    # The debugger's bus (AHB-AP). Raises BusFault; runs no time except where a flash access stalls.
    def bus_read(self, address: int, size: int) -> int:
        address &= 0xFFFF_FFFF
        self._check_access(address, size)
        kind = self._kind(address, size)
        if kind == "flash":
            if self.flash.reads_blocked:
                raise BusFault(f"flash read at {address:#010x} blocked: RDP level 1 with a debugger attached")
            offset = self._flash_offset(address)
            return int.from_bytes(self._flash_mem[offset:offset + size], "little")
        if kind in ("ram", "sysmem"):
            return int.from_bytes(self.uc.mem_read(address, size), "little")
        if kind == "mmio":
            return self._io_read(address, size, core=False)
        raise BusFault(f"no memory at {address:#010x}")

    def bus_write(self, address: int, size: int, value: int) -> None:
        address &= 0xFFFF_FFFF
        self._check_access(address, size)
        value &= (1 << (8 * size)) - 1
        kind = self._kind(address, size)
        if kind == "flash" or kind == "sysmem":
            self._debugger_store_to_flash(address, size, value)
        elif kind == "ram":
            self.uc.mem_write(address, value.to_bytes(size, "little"))
            self._dirty.append((address, address + size))
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
            offset = self._flash_offset(address)
            return bytes(self._flash_mem[offset:offset + length])
        if kind in ("ram", "sysmem"):
            return bytes(self.uc.mem_read(address, length))
        out = bytearray()
        for chunk_address, size in self._split(address, length):
            out += self.bus_read(chunk_address, size).to_bytes(size, "little")
        return bytes(out)

    def bus_write_block(self, address: int, data: bytes) -> None:
        address &= 0xFFFF_FFFF
        if not data:
            return
        if self._kind(address, len(data)) == "ram":
            self.uc.mem_write(address, bytes(data))
            self._dirty.append((address, address + len(data)))
            return
        position = 0
        for chunk_address, size in self._split(address, len(data)):
            self.bus_write(chunk_address, size, int.from_bytes(data[position:position + size], "little"))
            position += size

    @staticmethod
    def _split(address: int, length: int) -> List[Tuple[int, int]]:
        """Naturally aligned accesses covering [address, address + length): bytes/halfwords at the edges."""
        out = []
        end = address + length
        while address < end:
            size = 4
            while size > 1 and (address % size or address + size > end):
                size //= 2
            out.append((address, size))
            address += size
        return out

    @staticmethod
    def _check_access(address: int, size: int) -> None:
        if size not in (1, 2, 4):
            raise BusFault(f"access size {size} at {address:#010x}: 1, 2 or 4 bytes only")
        if address % size:
            raise BusFault(f"unaligned {size}-byte access at {address:#010x}")

    def _kind(self, address: int, length: int) -> str:
        """What backs [address, address + length): flash, ram, sysmem, mmio, or none (also for mixed)."""
        end = address + length
        flash_end = FLASH_START + self._flash_size
        if (FLASH_START <= address and end <= flash_end) or end <= self._flash_size:
            return "flash"
        for start, size in ((SRAM_START, SRAM_SIZE), (CCM_START, CCM_SIZE)):
            if start <= address and end <= start + size:
                return "ram"
        if SYSTEM_MEMORY <= address and end <= SYSTEM_MEMORY + SYSTEM_MEMORY_SIZE:
            return "sysmem"
        for start, size in ((OTP_PAGE, OTP_PAGE_SIZE), (OPTION_BYTES, OPTION_PAGE_SIZE),
                            (PERIPH_START, PERIPH_END - PERIPH_START), (PPB_START, PPB_END - PPB_START)):
            if start <= address and end <= start + size:
                return "mmio"
        return "none"

    def _flash_offset(self, address: int) -> int:
        return address - FLASH_START if address >= FLASH_START else address

    def _debugger_store_to_flash(self, address: int, size: int, value: int) -> None:
        """A debugger store into flash or the system area: the AHB stalls while BSY=1, then the model rules."""
        self._stall_debugger_while_busy()
        self.flash.write_flash(self._model_address(address), size, value)
        self._flash_changed = True

    def _stall_debugger_while_busy(self) -> None:
        """RM0090 3.6: an access that must wait for BSY stalls the bus; the debugger's transfer completes when
        the operation ends (time passes). With BSY stuck the model refuses the access instead."""
        if self.flash.busy:
            until = self.flash.busy_until_ps()
            if until is not None and until > self.clock.now_ps:
                self.advance(until - self.clock.now_ps)

    @staticmethod
    def _model_address(address: int) -> int:
        """The boot alias at 0x0 is main flash."""
        return address + FLASH_START if address < FLASH_START else address

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

    def _priority_below_zero(self) -> bool:
        """Execution priority -1 or -2: FAULTMASK set, or the HardFault or NMI handler active (B1.5.4)."""
        return bool(self.uc.reg_read(arm.UC_ARM_REG_FAULTMASK) & 1) or self.active_exception in (NMI, HARDFAULT)

    def _io_read(self, address: int, size: int, core: bool) -> int:
        if PPB_START <= address < PPB_END:
            return self.scs.read(address, size, from_core=core)
        if PERIPH_START <= address < PERIPH_END:
            block = address & ~(PERIPH_BLOCK - 1)
            reader = self._periph_read.get(block)
            if reader is None:
                return 0  # not modelled: reads as an unclocked peripheral
            if block == FLASH_BASE:
                return self._flash_register_read(address - block, size, core)
            return reader(address - block, size)
        if OTP_PAGE <= address < OTP_PAGE + OTP_PAGE_SIZE:
            return int.from_bytes(self._otp_page_bytes(address, size), "little")
        if OPTION_BYTES <= address < OPTION_BYTES + OPTION_PAGE_SIZE:
            return self._option_bytes_read(address, size)
        raise BusFault(f"no memory at {address:#010x}")

    def _io_write(self, address: int, size: int, value: int, core: bool) -> None:
        if PPB_START <= address < PPB_END:
            self.scs.write(address, value, size, from_core=core)
            return
        if PERIPH_START <= address < PERIPH_END:
            block = address & ~(PERIPH_BLOCK - 1)
            if block == FLASH_BASE:
                self._flash_register_write(address - block, size, value, core)
                return
            writer = self._periph_write.get(block)
            if writer is not None:
                writer(address - block, value, size)
            return
        if OTP_PAGE <= address < OTP_PAGE + OTP_PAGE_SIZE or OPTION_BYTES <= address < OPTION_BYTES + 0x400:
            if core:
                self._core_flash_store(address, size, value)
            else:
                self._debugger_store_to_flash(address, size, value)
            return
        raise BusFault(f"no memory at {address:#010x}")

    def _otp_page_bytes(self, address: int, size: int) -> bytes:
        """OTP (512 B), lock bytes (16 B), unique ID (12 B), F_SIZE (2 B); the rest of the page reads 0xFF."""
        page = bytearray(b"\xff" * OTP_PAGE_SIZE)
        otp = bytes(self.options.otp)
        page[0:OTP_SIZE + OTP_LOCK_SIZE] = otp[:OTP_SIZE + OTP_LOCK_SIZE]
        uid = UNIQUE_ID - OTP_PAGE
        page[uid:uid + 12] = self.unique_id[:12]
        fsize = F_SIZE - OTP_PAGE
        page[fsize:fsize + 2] = (self._flash_size // KB).to_bytes(2, "little")
        offset = address - OTP_PAGE
        return bytes(page[offset:offset + size])

    def _option_bytes_read(self, address: int, size: int) -> int:
        """RM0090 3.7.1 layout: 0x1FFF_C000 USER (7:0) and RDP (15:8); 0x1FFF_C008 nWRP (11:0). Reserved bits
        read 0 (a modelling choice)."""
        optcr = self.options.optcr
        words = {0x0: optcr & 0xFFFC, 0x8: (optcr >> 16) & 0x0FFF}
        offset = address - OPTION_BYTES
        word = words.get(offset & ~3, 0)
        return (word >> ((offset & 3) * 8)) & ((1 << (8 * size)) - 1)

    # --- FLASH registers: poll skipping and stalls --------------------------------------------------------
    def _flash_register_read(self, offset: int, size: int, core: bool = False) -> int:
        self._apply_flash_fixups()
        value = self.flash.read_register(offset, size)
        if core and (offset & ~3) == FLASH_SR_OFFSET:
            # A poll is the same code reading SR with BSY set again; a one-off read (say, to record SR in an
            # error report) is not skipped.
            polled_before = self._bsy_read_block == self._block_address
            self._bsy_read_block = self._block_address if self.flash.busy else None
            if polled_before and self.flash.busy and self._in_run and not self._stepping and self._skip_poll():
                value = self.flash.read_register(offset, size)
        return value

    def _skip_poll(self) -> bool:
        """The core polls BSY: nothing it does changes BSY, so its time jumps to the end of the operation or
        of the budget, and at most a quarter of the IWDG timeout while the IWDG counts (module docstring).
        With BSY stuck (`bsy_stuck`: no end) the jump is one stuck-poll step (`_stuck_poll_step`). The load
        then completes with the status at that time, so the loop's next instructions (its timeout check, an
        IWDG refresh) run. True if time moved."""
        now = self.clock.now_ps
        target = self._deadline
        until = self.flash.busy_until_ps()
        if until is not None:
            target = min(target, until)
        else:
            target = min(target, now + self._stuck_poll_step(now))
        if self.iwdg.running and self._iwdg_counting:
            target = min(target, now + max(self.iwdg.timeout_ps // 4, CYCLE_PS))
        if target <= now:
            return False
        self.poll_skips += 1
        self._jump_core_to(target)
        return True

    def _stuck_poll_step(self, now: int) -> int:
        """How far one poll of a BSY that will never clear may jump: STUCK_POLL_STEP_PS at first, then 1/16 of
        the time the core has been polling it (since it last resumed), so the loop's own timeout ends the
        wait at most 1/16 late after O(log) iterations instead of thousands."""
        if self._stuck_since is None:
            self._stuck_since = now
        return max(STUCK_POLL_STEP_PS, (now - self._stuck_since) // STUCK_POLL_GROWTH)

    def _jump_core_to(self, when: int) -> None:
        """Inside a run: the core's time moves to `when` (<= the run's deadline) as if it had waited."""
        self._core_ps = max(self._core_ps, when)
        self.clock.now_ps = when
        self.flash.on_time()

    def _wait_for_flash_in_run(self) -> bool:
        """A core access that must wait for BSY=0 (RM0090 3.6): inside the budget the core's time jumps to the
        end of the operation; otherwise the run stops and the access runs again once BSY clears. True if the
        access can proceed now."""
        until = self.flash.busy_until_ps()
        if until is not None and until <= self._deadline and not self._stepping:
            self._jump_core_to(max(until, self.clock.now_ps))
            if not self.flash.busy:
                return True
        self._stop_run(("stall",))
        return False

    def _flash_register_write(self, offset: int, size: int, value: int, core: bool = False) -> None:
        self._apply_flash_fixups()
        if (offset & ~3) == 0x10 and self.flash.busy:
            if core and self._in_run:
                if not self._wait_for_flash_in_run():
                    return  # the store runs again when BSY clears
            elif not core:
                self._stall_debugger_while_busy()
        self.flash.write_register(offset, value, size)

    # --- IWDG: keep its lazy counter in step -------------------------------------------------------------
    def _iwdg_read(self, offset: int, size: int) -> int:
        self._sync_iwdg()
        return self.iwdg.read(offset, size)

    def _iwdg_write(self, offset: int, value: int, size: int) -> None:
        self._sync_iwdg()
        self.iwdg.write(offset, value, size)

    def _sync_iwdg(self) -> None:
        self.iwdg.sync(self.clock.now_ps, self._iwdg_counting)

    def _iwdg_should_count(self) -> bool:
        """The IWDG stops while the core is halted and DBGMCU_APB1_FZ.DBG_IWDG_STOP is set (RM0090 38.16.4),
        and while NRST holds the chip in reset."""
        if self._nrst:
            return False
        return not (self.halted and self.scs.iwdg_frozen_when_halted)

    def before_freeze_change(self) -> None:
        """Called by the SCS before DBGMCU_APB1_FZ changes."""
        self._sync_iwdg()

    def after_freeze_change(self) -> None:
        self._iwdg_counting = self._iwdg_should_count()

    def _run_state_changed(self) -> None:
        """Halted/running/reset changed: settle the IWDG and CYCCNT with the old state, then switch."""
        self._sync_iwdg()
        self._iwdg_counting = self._iwdg_should_count()
        self.scs.sync_cycle_counter()

    # ==========================================================================================================
    # Core stores into read-only memory (flash, system memory) and bad accesses.
    def _on_store_to_readonly(self, uc: Uc, access: int, address: int, size: int, value: int, _: object) -> bool:
        """Unicorn performs the store after this returns True; the model's bytes are restored afterwards."""
        self._apply_flash_fixups()
        if address < SYSTEM_MEMORY:
            offset = self._flash_offset(address)
            self._core_flash_store(address, size, value)
            self._flash_fixups.append((offset, bytes(self._flash_mem[offset:offset + size])))
        else:
            before = bytes(uc.mem_read(address, size))
            self._core_flash_store(address, size, value)
            self._flash_fixups.append((-address, before))  # negative: a Unicorn address, not a flash offset
        return True

    def _core_flash_store(self, address: int, size: int, value: int) -> None:
        if self.flash.busy and self._in_run and not self._wait_for_flash_in_run():
            return
        self.flash.write_flash(self._model_address(address), size, value)
        self._flash_changed = True

    def _apply_flash_fixups(self) -> None:
        if not self._flash_fixups:
            return
        fixups, self._flash_fixups = self._flash_fixups, []
        for where, data in fixups:
            if where >= 0:
                self._flash_mem[where:where + len(data)] = data
            else:
                self.uc.mem_write(-where, data)

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
        if self._in_run:
            self._stop_run(("fault", cfsr, bfar))
        else:
            self._take_fault(cfsr, bfar)

    # ==========================================================================================================
    # Running
    def _stop_run(self, reason: Tuple) -> None:
        if self._stop is None:
            self._stop = reason
        self.uc.emu_stop()

    def _on_block(self, uc: Uc, address: int, size: int, _: object) -> None:
        if self._flash_fixups:
            self._apply_flash_fixups()
        if self.flash.sr & FLASH_SR_BSY:  # (the attribute, not the property: this runs for every block)
            self.clock.now_ps = max(self.clock.now_ps, min(self._core_ps, self._deadline))
            self.flash.on_time()  # an operation that ended during the previous block
            if address < CCM_START and self.flash.busy and not self._wait_for_flash_in_run():
                return  # code fetches from flash stall while it erases or programs (single bank, RM0090 3.5)
        self._block_address = address
        if address < CCM_START:
            self._flash_code_cached = True
        scanned = self._block_sizes.get((address, size))
        if scanned is None:
            scanned = scan_block(bytes(uc.mem_read(address, size)))
            self._block_sizes[(address, size)] = scanned
        n = scanned[0]
        if self._stepping:
            self.instructions += 1
            self.retired = True
            return
        if self._core_ps >= self._deadline:
            self._stop_run(("budget",))
            return
        self.clock.now_ps = self._core_ps
        self._core_ps += n * CYCLE_PS
        self.instructions += n
        self.retired = True
        if address == self._loop_address:
            if not scanned[1]:
                self._watch_loop(uc)
        else:
            self._loop_address = address
            self._loop_count = 0

    _loop_address = -1
    _loop_count = 0
    _loop_snapshot: Optional[List[int]] = None
    _loop_io = False

    def _watch_loop(self, uc: Uc) -> None:
        """Idle-loop detection: a block without stores that branches to itself and comes back twice with every
        register and flag unchanged, without an MMIO access, repeats forever until something outside the core
        changes; the rest of the budget is idle. (A loop polling RAM that the debugger writes stays correct:
        the debugger writes only between runs.) After a mismatch the loop is left alone for a while, so a
        counting loop pays for a register snapshot only once every 64 iterations."""
        self._loop_count += 1
        if self._loop_count < 4:
            return
        if self._loop_count == 4:
            self._loop_snapshot = [uc.reg_read(r) for r in _LOOP_REGS]
            self._loop_io = False
            return
        snapshot = [uc.reg_read(r) for r in _LOOP_REGS]
        if self._loop_io or snapshot != self._loop_snapshot:
            self._loop_count = -60
            return
        if self._loop_count >= 6:
            self.idle_loops += 1
            self._stop_run(("idle", self._deadline))

    def _on_interrupt(self, uc: Uc, intno: int, _: object) -> None:
        if intno == INTR_BKPT:
            self._stop_run(("bkpt",))
        elif intno == INTR_EXCEPTION_EXIT:
            self._stop_run(("exception_return",))
        elif intno == INTR_SWI:
            self._stop_run(("svc",))
        elif intno == INTR_PREFETCH_ABORT:
            pc = uc.reg_read(arm.UC_ARM_REG_PC)
            self._stop_run(("fault", CFSR_IACCVIOL if pc >= PPB_START else CFSR_IBUSERR, None))
        elif intno == INTR_DATA_ABORT:
            self._stop_run(("fault", CFSR_PRECISERR, None))
        else:
            self._stop_run(("fault", _USAGE_FAULTS.get(intno, CFSR_UNDEFINSTR), None))

    def _on_breakpoint(self, uc: Uc, address: int, size: int, _: object) -> None:
        if address == self._resume_pc:
            self._resume_pc = None
            return
        if address in self.scs.breakpoint_addresses():
            self._stop_run(("fpb",))

    def breakpoints_changed(self) -> None:
        """FPB comparators or FP_CTRL changed: hook exactly the enabled addresses (a ranged UC_HOOK_CODE costs
        nothing elsewhere)."""
        uc = getattr(self, "uc", None)
        scs = getattr(self, "scs", None)
        if uc is None or scs is None:
            return
        wanted = set(scs.breakpoint_addresses())
        for address in list(self._bp_hooks):
            if address not in wanted:
                uc.hook_del(self._bp_hooks.pop(address))
        for address in wanted:
            if address not in self._bp_hooks:
                self._bp_hooks[address] = uc.hook_add(UC_HOOK_CODE, self._on_breakpoint, None, address, address)
        self._flush_all_code()

    def _core_can_run(self) -> bool:
        if self.halted or self.lockup or self.sleeping or self._nrst:
            return False
        if self._wait_flash:
            if self.flash.busy:
                return False
            self._wait_flash = False
        if self._idle_until is not None:
            if self.clock.now_ps < self._idle_until:
                return False
            self._idle_until = None
        return True

    def _next_event_ps(self, core_runs: bool) -> Optional[int]:
        """The next time something must happen outside the core. The normal end of a flash operation is not
        an event while the core runs: the core sees it when it next touches the flash (each access brings the
        model up to time), so a program loop needs no restart per word. A cut (reset_during) always is."""
        flash_next = self.flash.next_event_ps()
        if core_runs and flash_next is not None and flash_next == self.flash.busy_until_ps():
            flash_next = None
        times = [flash_next, self.iwdg.expiry_ps(self._iwdg_counting), self._idle_until]
        if self._wait_flash:
            times.append(self.flash.busy_until_ps())
        present = [t for t in times if t is not None and t > self.clock.now_ps]
        return min(present) if present else None

    def _process_events(self) -> None:
        self._sync_iwdg()
        self.flash.on_time()
        if self.iwdg.expired:
            self.reset("iwdg")

    def advance(self, ps: int) -> None:
        """Let `ps` picoseconds pass: the core runs if it can, flash operations progress, the IWDG counts."""
        if ps < 0:
            raise ValueError("virtual time cannot go backwards")
        target = self.clock.now_ps + ps
        while True:
            self._process_events()
            now = self.clock.now_ps
            if now >= target or (self.halted and self._halt_stops_advance):
                break
            end = target
            runs = self._core_can_run()
            event = self._next_event_ps(runs)
            if event is not None and event < end:
                end = event
            if runs:
                self._run_until(end)
            else:
                self.clock.now_ps = end

    def run_until_halted(self, limit_ps: int) -> bool:
        """Advance until the core halts or `limit_ps` has passed, whichever is first (the clock stops at the
        halt, give or take the rest of the block). True if the core is halted. For hosts with no link cost."""
        end = self.clock.now_ps + limit_ps
        while not self.halted and self.clock.now_ps < end:
            self._halt_stops_advance = True
            try:
                self.advance(end - self.clock.now_ps)
            finally:
                self._halt_stops_advance = False
        return self.halted

    _halt_stops_advance = False

    def _run_until(self, end: int) -> None:
        now = self.clock.now_ps
        if self._core_ps < now:
            self._core_ps = now  # a core that waited starts now; one that ran ahead keeps its debt
        if self._core_ps >= end:
            self.clock.now_ps = end
            return
        if not self._prepare_run():
            return
        self._deadline = end
        self._loop_address = -1
        self._run_emulation(count=0)
        if self._stop is not None and self._stop[0] == "budget" or self._stop is None and self._core_ps >= end:
            self.clock.now_ps = end
        else:
            self.clock.now_ps = max(now, min(self._core_ps, end))
        self._finish_run()

    def _prepare_run(self) -> bool:
        """Flush stale code and check the state the core would start in; False if it faulted instead."""
        self._flush_dirty_code()
        self._sync_flash_protection()
        if not self._thumb:
            self._take_fault(CFSR_INVSTATE)  # EPSR.T = 0: the first instruction takes a UsageFault
            return False
        return True

    def _run_emulation(self, count: int) -> None:
        uc = self.uc
        self._stop = None
        self._in_run = True
        pc = uc.reg_read(arm.UC_ARM_REG_PC)
        try:
            uc.emu_start(pc | 1, NEVER, 0, count)
        except UcError as error:
            if self._stop is None:
                self._stop = self._classify_error(error)
        finally:
            self._in_run = False
            self._apply_flash_fixups()

    def _classify_error(self, error: UcError) -> Tuple:
        pc = self.uc.reg_read(arm.UC_ARM_REG_PC)
        if error.errno == UC_ERR_INSN_INVALID:
            previous = self._halfword(pc - 2)
            if previous == WFE:
                return ("sleep",)
            if previous == YIELD:
                return ("continue",)
            return ("fault", CFSR_UNDEFINSTR, None)
        return ("fault", CFSR_IBUSERR, None)

    def _halfword(self, address: int) -> Optional[int]:
        try:
            return int.from_bytes(self.uc.mem_read(address, 2), "little")
        except UcError:
            return None

    def _finish_run(self) -> None:
        """Act on why the run stopped (the clock already says when)."""
        reason = self._stop
        self._stop = None
        if self._pending_reset is not None:
            cause, self._pending_reset = self._pending_reset, None
            self.reset(cause)
            return
        if reason is None:
            if not self._stepping and self._halfword(self.uc.reg_read(arm.UC_ARM_REG_PC) - 2) == WFI:
                self._enter_sleep()
            return
        kind = reason[0]
        if kind == "bkpt":
            if self.debugen:
                self.halt(DFSR_BKPT)
            else:
                self._take_fault(0, hfsr=HFSR_DEBUGEVT)  # BKPT without a debugger escalates (ARMv7-M C1.4)
        elif kind == "fpb":
            self.halt(DFSR_BKPT)
        elif kind == "fault":
            self._take_fault(reason[1], reason[2])
        elif kind == "svc":
            self._enter_exception(SVCALL, self.uc.reg_read(arm.UC_ARM_REG_PC))
        elif kind == "exception_return":
            self._exception_return()
        elif kind == "idle":
            self._idle_until = reason[1]
        elif kind == "stall":
            self._wait_flash = True
        elif kind == "sleep":
            self._enter_sleep()

    def _enter_sleep(self) -> None:
        self.sleeping = True

    # --- translation cache -------------------------------------------------------------------------------
    def _flush_dirty_code(self) -> None:
        if self._flash_changed and self._flash_code_cached:
            self._flush_all_code()
        self._flash_changed = False
        if self._dirty:
            dirty, self._dirty = self._dirty, []
            for start, end in dirty:
                self.uc.ctl_remove_cache(start, end)
            self._block_sizes.clear()

    def _flush_all_code(self) -> None:
        for start, size in ((0, self._flash_size), (FLASH_START, self._flash_size), (SRAM_START, SRAM_SIZE),
                            (SYSTEM_MEMORY, SYSTEM_MEMORY_SIZE)):
            self.uc.ctl_remove_cache(start, start + size)
        self._block_sizes.clear()
        self._flash_code_cached = False

    def _on_flash_operation(self, kind: str, phase: str) -> None:
        if phase in ("end", "cut"):
            self._flash_changed = True
        if self.on_flash_operation is not None:
            self.on_flash_operation(kind, phase)

    def _sync_flash_protection(self) -> None:
        """RDP level 1 with a debugger attached: the core may neither read nor execute flash (RM0090 3.7.3)."""
        prot = UC_PROT_NONE if self.flash.reads_blocked else UC_PROT_READ | UC_PROT_EXEC
        if prot != self._flash_prot:
            self.uc.mem_protect(FLASH_START, self._flash_size, prot)
            self.uc.mem_protect(0, self._flash_size, prot)
            self._flash_prot = prot
            self._flush_all_code()

    # ==========================================================================================================
    # Halting and debug
    def halt(self, dfsr_bits: int) -> None:
        """Enter Debug state (the DFSR bits say why). Ends sleep, lockup, idling and stalls; the instruction
        that was waiting runs again after `resume`."""
        self.dfsr |= dfsr_bits
        if self.halted:
            return
        if self.lockup:
            self.lockup = False  # entering Debug state leaves Lockup (ARMv7-M B1.5.15); PC stays 0xFFFF_FFFE
        self.halted = True
        self.sleeping = False
        self._idle_until = None
        self._wait_flash = False
        self._stuck_since = None
        self._run_state_changed()

    def resume(self) -> None:
        if not self.halted:
            return
        self.halted = False
        self._resume_pc = self.uc.reg_read(arm.UC_ARM_REG_PC)
        self._core_ps = self.clock.now_ps
        self._stuck_since = None
        self._run_state_changed()

    def step(self) -> None:
        """Execute one instruction and halt again (DHCSR.C_STEP). Runs no virtual time."""
        if not self.halted:
            return
        self._stepping = True
        try:
            if self._prepare_run():
                self._resume_pc = self.uc.reg_read(arm.UC_ARM_REG_PC)
                self._run_emulation(count=1)
                self._finish_run()
        finally:
            self._stepping = False
        self._idle_until = None
        self._wait_flash = False
        self.sleeping = False
        if not self.lockup:
            self.halted = True
        self.dfsr |= DFSR_HALTED

    def read_core_register(self, regsel: int) -> int:
        """A register by DCRSR REGSEL number (ARMv7-M C1.6.3); unknown numbers read 0."""
        uc = self.uc
        if 0 <= regsel <= 14:
            return uc.reg_read(_GP_REGS[regsel]) & 0xFFFF_FFFF
        if regsel == REGSEL_PC:
            return uc.reg_read(arm.UC_ARM_REG_PC) & 0xFFFF_FFFF
        if regsel == REGSEL_XPSR:
            xpsr = uc.reg_read(arm.UC_ARM_REG_XPSR) & ~XPSR_T & 0xFFFF_FFFF
            return xpsr | (XPSR_T if self._thumb else 0)
        if regsel == REGSEL_MSP:
            return uc.reg_read(arm.UC_ARM_REG_MSP) & 0xFFFF_FFFF
        if regsel == REGSEL_PSP:
            return uc.reg_read(arm.UC_ARM_REG_PSP) & 0xFFFF_FFFF
        if regsel == REGSEL_SPECIAL:
            return ((uc.reg_read(arm.UC_ARM_REG_CONTROL) & 0x7) << 24
                    | (uc.reg_read(arm.UC_ARM_REG_FAULTMASK) & 1) << 16
                    | (uc.reg_read(arm.UC_ARM_REG_BASEPRI) & 0xFF) << 8
                    | (uc.reg_read(arm.UC_ARM_REG_PRIMASK) & 1))
        if regsel == REGSEL_FPSCR:
            return uc.reg_read(arm.UC_ARM_REG_FPSCR) & 0xFFFF_FFFF
        if REGSEL_S0 <= regsel < REGSEL_S0 + 32:
            return uc.reg_read(arm.UC_ARM_REG_S0 + regsel - REGSEL_S0) & 0xFFFF_FFFF
        return 0

    def write_core_register(self, regsel: int, value: int) -> None:
        uc = self.uc
        value &= 0xFFFF_FFFF
        if 0 <= regsel <= 14:
            uc.reg_write(_GP_REGS[regsel], value & ~3 if regsel == REGSEL_SP else value)
        elif regsel == REGSEL_PC:
            uc.reg_write(arm.UC_ARM_REG_PC, value & ~1)
        elif regsel == REGSEL_XPSR:
            self._thumb = bool(value & XPSR_T)
            uc.reg_write(arm.UC_ARM_REG_XPSR, value | XPSR_T)
            self.active_exception = value & 0x1FF
        elif regsel == REGSEL_MSP:
            uc.reg_write(arm.UC_ARM_REG_MSP, value & ~3)
        elif regsel == REGSEL_PSP:
            uc.reg_write(arm.UC_ARM_REG_PSP, value & ~3)
        elif regsel == REGSEL_SPECIAL:
            uc.reg_write(arm.UC_ARM_REG_PRIMASK, value & 1)
            uc.reg_write(arm.UC_ARM_REG_BASEPRI, (value >> 8) & 0xFF)
            uc.reg_write(arm.UC_ARM_REG_FAULTMASK, (value >> 16) & 1)
            uc.reg_write(arm.UC_ARM_REG_CONTROL, (value >> 24) & 0x7)
        elif regsel == REGSEL_FPSCR:
            uc.reg_write(arm.UC_ARM_REG_FPSCR, value)
        elif REGSEL_S0 <= regsel < REGSEL_S0 + 32:
            uc.reg_write(arm.UC_ARM_REG_S0 + regsel - REGSEL_S0, value)

    # ==========================================================================================================
    # Exceptions (simplified ARMv7-M; see the module docstring)
    def _take_fault(self, cfsr: int, bfar: Optional[int] = None, hfsr: int = HFSR_FORCED) -> None:
        scs = self.scs
        scs.cfsr |= cfsr
        scs.hfsr |= hfsr
        if bfar is not None:
            scs.bfar = bfar & 0xFFFF_FFFF
        if self.active_exception == HARDFAULT or (self._priority_below_zero() and cfsr != CFSR_IMPRECISERR):
            # A fault in the HardFault handler, or a synchronous one with FAULTMASK set, cannot be taken: lockup
            # (B1.5.15). (An imprecise one under FAULTMASK would wait until the priority drops; the model takes
            # it at once.)
            self._enter_lockup()
            return
        self._enter_exception(HARDFAULT, self.uc.reg_read(arm.UC_ARM_REG_PC))
        if not self.lockup and self.debugen and self.demcr & DEMCR_VC_HARDERR:
            self.halt(DFSR_VCATCH)

    def _enter_exception(self, number: int, return_pc: int) -> None:
        uc = self.uc
        handler_mode = self.active_exception != 0
        control = uc.reg_read(arm.UC_ARM_REG_CONTROL)
        use_psp = not handler_mode and bool(control & 2)
        sp = uc.reg_read(arm.UC_ARM_REG_PSP if use_psp else arm.UC_ARM_REG_MSP)
        xpsr = self.read_core_register(REGSEL_XPSR)
        if sp & 4:
            sp -= 4
            xpsr |= XPSR_STKALIGN
        else:
            xpsr &= ~XPSR_STKALIGN
        frame_sp = (sp - 32) & 0xFFFF_FFFF
        words = [uc.reg_read(r) for r in _FRAME_REGS] + [return_pc & ~1, xpsr]
        frame = b"".join((w & 0xFFFF_FFFF).to_bytes(4, "little") for w in words)
        if not self._stack_writable(frame_sp):
            self.scs.cfsr |= CFSR_STKERR
            self._enter_lockup()
            return
        uc.mem_write(frame_sp, frame)
        self._dirty.append((frame_sp, frame_sp + 32))
        uc.reg_write(arm.UC_ARM_REG_PSP if use_psp else arm.UC_ARM_REG_MSP, frame_sp)
        if use_psp:
            uc.reg_write(arm.UC_ARM_REG_CONTROL, control & ~2)
        exc_return = EXC_RETURN_HANDLER if handler_mode else (
            EXC_RETURN_THREAD_PSP if use_psp else EXC_RETURN_THREAD_MSP)
        handler = self._read_vector(number)
        if handler is None or not handler & 1 or not self._executable(handler & ~1):
            if number == HARDFAULT:
                self._enter_lockup()
            else:
                self._set_exception(number, exc_return)
                self._take_fault(CFSR_INVSTATE if handler is not None and not handler & 1 else CFSR_IBUSERR)
            return
        self._set_exception(number, exc_return)
        uc.reg_write(arm.UC_ARM_REG_PC, handler & ~1)

    def _set_exception(self, number: int, exc_return: int) -> None:
        self._exception_stack.append(self.active_exception)
        self.active_exception = number
        self.uc.reg_write(arm.UC_ARM_REG_IPSR, number)
        self.uc.reg_write(arm.UC_ARM_REG_LR, exc_return)

    def _exception_return(self) -> None:
        uc = self.uc
        exc_return = uc.reg_read(arm.UC_ARM_REG_PC) | 1
        if not self._exception_stack or exc_return not in (EXC_RETURN_HANDLER, EXC_RETURN_THREAD_MSP,
                                                            EXC_RETURN_THREAD_PSP):
            self._take_fault(CFSR_INVPC)
            return
        use_psp = exc_return == EXC_RETURN_THREAD_PSP
        sp = uc.reg_read(arm.UC_ARM_REG_PSP if use_psp else arm.UC_ARM_REG_MSP)
        try:
            frame = bytes(uc.mem_read(sp, 32))
        except UcError:
            self._take_fault(CFSR_STKERR)
            return
        words = [int.from_bytes(frame[i:i + 4], "little") for i in range(0, 32, 4)]
        for reg, word in zip(_FRAME_REGS, words[:6]):
            uc.reg_write(reg, word)
        xpsr = words[7]
        sp += 32 + (4 if xpsr & XPSR_STKALIGN else 0)
        uc.reg_write(arm.UC_ARM_REG_PSP if use_psp else arm.UC_ARM_REG_MSP, sp)
        self.active_exception = self._exception_stack.pop()
        uc.reg_write(arm.UC_ARM_REG_IPSR, self.active_exception)
        if use_psp:
            uc.reg_write(arm.UC_ARM_REG_CONTROL, uc.reg_read(arm.UC_ARM_REG_CONTROL) | 2)
        self._thumb = bool(xpsr & XPSR_T)
        uc.reg_write(arm.UC_ARM_REG_XPSR, (xpsr & ~0x1FF & ~XPSR_STKALIGN) | XPSR_T | self.active_exception)
        uc.reg_write(arm.UC_ARM_REG_PC, words[6] & ~1)

    def _enter_lockup(self) -> None:
        self.lockup = True
        self.uc.reg_write(arm.UC_ARM_REG_PC, LOCKUP_PC)

    def _read_vector(self, number: int) -> Optional[int]:
        address = self.scs.vtor + 4 * number
        return self._core_read32(address)

    def _core_read32(self, address: int) -> Optional[int]:
        """A word as the core would read it (None: bus error)."""
        if self._kind(address, 4) == "flash":
            if self.flash.reads_blocked:
                return None
            offset = self._flash_offset(address)
            return int.from_bytes(self._flash_mem[offset:offset + 4], "little")
        try:
            return int.from_bytes(self.uc.mem_read(address, 4), "little")
        except UcError:
            return None

    def _executable(self, address: int) -> bool:
        kind = self._kind(address, 2)
        if kind == "flash":
            return not self.flash.reads_blocked
        return kind == "sysmem" or (kind == "ram" and address >= SRAM_START)

    @staticmethod
    def _stack_writable(frame_sp: int) -> bool:
        for start, size in ((SRAM_START, SRAM_SIZE), (CCM_START, CCM_SIZE)):
            if start <= frame_sp and frame_sp + 32 <= start + size:
                return True
        return False

    # ==========================================================================================================
    # Resets
    @property
    def nrst_asserted(self) -> bool:
        return self._nrst

    @nrst_asserted.setter
    def nrst_asserted(self, asserted: bool) -> None:
        """NRST low: a pin reset, then the chip stays in reset (time passes, no instructions) until released.
        A probe that already called `reset("pin")` at this very moment does not cause a second one."""
        asserted = bool(asserted)
        if asserted == self._nrst:
            return
        if asserted:
            self._nrst = True
            same = self._last_reset == ("pin", self.clock.now_ps, self.instructions)
            self._system_reset("pin", count=not same)
        else:
            self._nrst = False
            self._run_state_changed()
            self._leave_reset()

    def request_reset(self, cause: str) -> None:
        """A reset asked for by the core (AIRCR), the flash model (reset_during) or the debugger: at once when
        the core is not running, else as soon as the current instruction is abandoned."""
        if self._in_run:
            self._pending_reset = cause
            self.uc.emu_stop()
        else:
            self.reset(cause)

    def reset(self, cause: str) -> None:
        """A reset of the given cause; see the module docstring."""
        if cause not in RESET_CAUSES:
            raise ValueError(f"unknown reset cause {cause!r}; known: {', '.join(RESET_CAUSES)}")
        if self._in_run:
            self.request_reset(cause)
            return
        self._system_reset(cause, count=True)

    def _system_reset(self, cause: str, count: bool) -> None:
        if count:
            self.resets[cause] = self.resets.get(cause, 0) + 1
        self._last_reset = (cause, self.clock.now_ps, self.instructions)
        self._pending_reset = None
        self._sync_iwdg()
        if cause != "vectreset":
            power = cause in POWER_RESETS
            self.flash.system_reset()
            self.rcc.reset(power_on=power)
            if count:
                self.rcc.record_reset(RESET_FLAGS_FOR_CAUSE[cause])
            self.iwdg.reset()
            self.crc.reset()
            if power:
                self.debugen = False
                self.demcr = 0
                self.dfsr = 0
                self.scs.reset_debug()
            self.scs.reset_system()
            if self.options.hardware_watchdog:
                self.iwdg.hardware_start()  # WDG_SW = 0: the IWDG runs from every reset (RM0090 19.3.2)
        self._core_reset()
        self.reset_seen = True
        self._run_state_changed()
        if not self._nrst:
            self._leave_reset()

    def _core_reset(self) -> None:
        uc = self.uc
        self._apply_flash_fixups()
        self._flush_all_code()
        self._sync_flash_protection()
        for reg in _GP_REGS[:13]:
            uc.reg_write(reg, 0)
        uc.reg_write(arm.UC_ARM_REG_IPSR, 0)
        uc.reg_write(arm.UC_ARM_REG_CONTROL, 0)
        uc.reg_write(arm.UC_ARM_REG_PRIMASK, 0)
        uc.reg_write(arm.UC_ARM_REG_BASEPRI, 0)
        uc.reg_write(arm.UC_ARM_REG_FAULTMASK, 0)
        uc.reg_write(arm.UC_ARM_REG_PSP, 0)
        uc.reg_write(arm.UC_ARM_REG_LR, 0xFFFF_FFFF)
        self.active_exception = 0
        self._exception_stack = []
        # ARMv7-M B1.5.5: SP_main from vector 0, PC and EPSR.T from vector 1 (VTOR is 0 after reset).
        sp = self._core_read32(0)
        pc = self._core_read32(4)
        sp = 0xFFFF_FFFC if sp is None else sp & ~3
        pc = 0xFFFF_FFFF if pc is None else pc
        uc.reg_write(arm.UC_ARM_REG_MSP, sp)
        uc.reg_write(arm.UC_ARM_REG_PC, pc & ~1)
        self._thumb = bool(pc & 1)
        uc.reg_write(arm.UC_ARM_REG_XPSR, XPSR_T)
        self.halted = False
        self.lockup = False
        self.sleeping = False
        self._idle_until = None
        self._wait_flash = False
        self._stuck_since = None
        self._resume_pc = None
        self._core_ps = self.clock.now_ps

    def _leave_reset(self) -> None:
        """The core leaves reset: a halt requested during reset or VC_CORERESET keeps it halted on the reset
        vector; otherwise the application starts."""
        if self.halted:
            return
        if self.debugen and self.demcr & DEMCR_VC_CORERESET:
            self.halt(DFSR_VCATCH)
            return
        self._application_runs()

    def _application_runs(self) -> None:
        """What the faulted application does as soon as it runs (faults.py, "what the application does")."""
        faults = self.faults
        if faults.iwdg_timeout_ms is not None:
            prescaler, reload = iwdg_settings_for(faults.iwdg_timeout_ms)
            self._sync_iwdg()
            self.iwdg.start(prescaler, reload)
        if faults.sticky_sr:
            self.flash.set_sticky(faults.sticky_sr)
        if faults.cr_locked_by_bad_key:
            try:
                self.flash.write_register(FLASH_KEYR - FLASH_BASE, BAD_FLASH_KEY)
            except BusFault:
                pass  # the application takes the bus error; CR stays locked until the next reset

    def power_on(self) -> None:
        """Power-on reset: option bytes loaded, the application (if any) runs."""
        self._system_reset("por", count=True)

    def apply_option_faults(self) -> None:
        """Program the option-byte faults (write_protected, rdp_level1, hardware_watchdog) into the option
        bytes, as someone with a programmer would have; they take effect like loaded option bytes."""
        from f4load.sim.state import program_option_faults

        program_option_faults(self.options, self.faults)
        self.flash.system_reset()

    def to_state(self) -> ChipState:
        from f4load.sim.state import ChipState

        self._apply_flash_fixups()
        return ChipState(flash=bytearray(self._flash_mem), options=self.options, unique_id=self.unique_id,
                         faults=self.faults)

    # --- convenience for tests and tools -----------------------------------------------------------------
    @property
    def pc(self) -> int:
        return self.read_core_register(REGSEL_PC)

    def load(self, address: int, data: bytes) -> None:
        """Put bytes into RAM or flash storage directly (tests, tools): no flash rules, no time."""
        if self._kind(address, len(data)) == "flash":
            offset = self._flash_offset(address)
            self._flash_mem[offset:offset + len(data)] = data
            self._flush_all_code()
        else:
            self.uc.mem_write(address, bytes(data))
            self._dirty.append((address, address + len(data)))


__all__ = ["CYCLE_PS", "RESET_CAUSES", "Chip", "scan_block"]
