"""The debug side of the virtual STM32F407: the Private Peripheral Bus and the SWD debug port.

`SystemControlSpace` answers every access to 0xE000_0000..0xE00F_FFFF, for the core (Unicorn MMIO) and for
the debugger (AHB-AP) alike, so both see the same registers:

| block | base | what is modelled |
|---|---|---|
| ITM | 0xE000_0000 | plain registers (stimulus ports read 1 = FIFO ready), CoreSight IDs |
| DWT | 0xE000_1000 | CTRL (NUMCOMP=4), CYCCNT counted from the virtual clock, comparators inert |
| FPB | 0xE000_2000 | FP_CTRL (NUM_CODE=6, NUM_LIT=2), FP_COMPn; enabled code comparators halt the core |
| SCS | 0xE000_E000 | SysTick, NVIC (plain); SCB: CPUID, ICSR, VTOR, AIRCR, CCR, CFSR, HFSR, DFSR, BFAR, CPACR, IDs; |
|     |             | debug: DHCSR, DCRSR, DCRDR, DEMCR; FPU: FPCCR, MVFR0/1 |
| TPIU | 0xE004_0000 | plain registers with their reset values, CoreSight IDs |
| ETM | 0xE004_1000 | plain registers, CoreSight IDs |
| DBGMCU | 0xE004_2000 | IDCODE (DEV_ID 0x413, REV_ID from the part), CR, APB1_FZ (DBG_IWDG_STOP), APB2_FZ |
| ROM table | 0xE00F_F000 | entries for SCS, DWT, FPB, ITM, TPIU, ETM; ST's JEP106 (0x20) and part 0x413 |

Anything else in the PPB is a bus error. Unknown offsets *inside* a modelled block are plain read/write
storage (reset 0), so a debugger probing an optional register does not fault.

Sources: ARMv7-M Architecture Reference Manual (C1 debug, B3 system address map), Cortex-M4 TRM (component
IDs), RM0090 38 (DBGMCU, ROM table of the STM32F4). The core's run and debug state (halted, lockup, DFSR, DEMCR,
C_DEBUGEN, S_RESET_ST) lives in the core (`core.py`); the SCS reaches it, the register file, halting and the
FPB breakpoint hooks through `DebugCore`.

Clone identity (`faults.clone`): the part's REV_ID is replaced (chip.py) and the ROM table carries ARM's
generic Cortex-M4 ROM table identity (JEP106 0x43B, part 0x4C4) instead of ST's (0x020, part 0x413), which is
what non-ST F4 look-alikes typically show.

The SW-DP and its AHB-AP, through which the probe front-ends reach the chip, are in `debug_port.py`.
"""
from __future__ import annotations

from typing import Callable, Dict, Protocol, Tuple, TypeVar

from f4load.part import Part
from f4load.registers import DBGMCU_APB1_FZ, DBGMCU_APB2_FZ, DBGMCU_CR, DBGMCU_IDCODE, ROM_TABLE_BASE
from f4load.sim.clock import CYCLE_PS, VirtualClock
from f4load.sim.flash import BusFault

T = TypeVar("T")

# --- component bases (ARMv7-M B3.1, Cortex-M4 TRM) -----------------------------------------------------------
PPB_START = 0xE000_0000
PPB_END = 0xE010_0000
ITM_BASE = 0xE000_0000
DWT_BASE = 0xE000_1000
FPB_BASE = 0xE000_2000
SCS_BASE = 0xE000_E000
TPIU_BASE = 0xE004_0000
ETM_BASE = 0xE004_1000
DBGMCU_BASE = 0xE004_2000

# --- SCS registers (offsets from SCS_BASE) ---------------------------------------------------------------
ICTR = 0x004
ACTLR = 0x008
SYST_CSR, SYST_RVR, SYST_CVR, SYST_CALIB = 0x010, 0x014, 0x018, 0x01C
NVIC_ISER, NVIC_ICER, NVIC_ISPR, NVIC_ICPR, NVIC_IABR, NVIC_IPR = 0x100, 0x180, 0x200, 0x280, 0x300, 0x400
NVIC_IPR_END = 0x4F0
CPUID = 0xD00
ICSR = 0xD04
VTOR = 0xD08
AIRCR = 0xD0C
SCR = 0xD10
CCR = 0xD14
SHPR1, SHPR2, SHPR3 = 0xD18, 0xD1C, 0xD20
SHCSR = 0xD24
CFSR = 0xD28
HFSR = 0xD2C
DFSR = 0xD30
MMFAR = 0xD34
BFAR = 0xD38
AFSR = 0xD3C
CPACR = 0xD88
MPU_TYPE = 0xD90
DHCSR_OFF = 0xDF0
DCRSR_OFF = 0xDF4
DCRDR_OFF = 0xDF8
DEMCR_OFF = 0xDFC
STIR = 0xF00
FPCCR, FPCAR, FPDSCR, MVFR0, MVFR1 = 0xF34, 0xF38, 0xF3C, 0xF40, 0xF44

CPUID_VALUE = 0x410F_C241  # ARM, r0p1, Cortex-M4 (part 0xC24)
ICTR_VALUE = 0x2  # INTLINESNUM: up to 96 interrupts (the F407 has 82)
MPU_TYPE_VALUE = 0x0000_0800  # 8 regions
CCR_RESET = 0x0000_0200  # STKALIGN
CCR_BFHFNMIGN = 1 << 8  # handlers at priority -1/-2 (and FAULTMASK) ignore precise data bus faults (B3.2.8)
# ACTLR (Cortex-M4 TRM 4.3.2): DISMCYCINT, DISDEFWBUF, DISFOLD, DISFPCA, DISOOFP.
ACTLR_DISDEFWBUF = 1 << 1  # no write buffer: a store's bus fault is precise
ACTLR_WRITABLE = 0x0000_0307
FPCCR_RESET = 0xC000_0000  # ASPEN, LSPEN
MVFR0_VALUE = 0x1011_0021  # single-precision FPU of the Cortex-M4F
MVFR1_VALUE = 0x1100_0011
VTOR_MASK = 0x3FFF_FF80
CPACR_MASK = 0x00F0_0000
# ID_PFR0..ID_ISAR4 of the Cortex-M4 (TRM 4.3), read-only.
ID_REGISTERS: Dict[int, int] = {
    0xD40: 0x0000_0030, 0xD44: 0x0000_0200, 0xD48: 0x0010_0000, 0xD4C: 0x0000_0000,
    0xD50: 0x0010_0030, 0xD54: 0x0000_0000, 0xD58: 0x0100_0000, 0xD5C: 0x0000_0000,
    0xD60: 0x0110_1110, 0xD64: 0x0211_1000, 0xD68: 0x2111_2231, 0xD6C: 0x0111_1110, 0xD70: 0x0131_0132,
}

AIRCR_VECTKEY = 0x05FA
AIRCR_VECTKEYSTAT = 0xFA05
AIRCR_VECTRESET = 1 << 0
AIRCR_VECTCLRACTIVE = 1 << 1
AIRCR_SYSRESETREQ = 1 << 2
AIRCR_PRIGROUP_SHIFT = 8

# CFSR (MMFSR | BFSR << 8 | UFSR << 16), HFSR.
CFSR_IACCVIOL = 1 << 0
CFSR_IBUSERR = 1 << 8
CFSR_PRECISERR = 1 << 9
CFSR_IMPRECISERR = 1 << 10
CFSR_STKERR = 1 << 12
CFSR_BFARVALID = 1 << 15
CFSR_UNDEFINSTR = 1 << 16
CFSR_INVSTATE = 1 << 17
CFSR_INVPC = 1 << 18
HFSR_VECTTBL = 1 << 1
HFSR_FORCED = 1 << 30
HFSR_DEBUGEVT = 1 << 31

# DFSR (ARMv7-M C1.6.1).
DFSR_HALTED = 1 << 0
DFSR_BKPT = 1 << 1
DFSR_DWTTRAP = 1 << 2
DFSR_VCATCH = 1 << 3
DFSR_EXTERNAL = 1 << 4
DFSR_MASK = 0x1F

# DHCSR (ARMv7-M C1.6.2).
DHCSR_DBGKEY = 0xA05F
C_DEBUGEN = 1 << 0
C_HALT = 1 << 1
C_STEP = 1 << 2
C_MASKINTS = 1 << 3
C_SNAPSTALL = 1 << 5
S_REGRDY = 1 << 16
S_HALT = 1 << 17
S_SLEEP = 1 << 18
S_LOCKUP = 1 << 19
S_RETIRE_ST = 1 << 24
S_RESET_ST = 1 << 25

# DCRSR.
DCRSR_REGSEL_MASK = 0x7F
DCRSR_REGWNR = 1 << 16

# DEMCR (ARMv7-M C1.6.5).
DEMCR_VC_CORERESET = 1 << 0
DEMCR_VC_MMERR = 1 << 4
DEMCR_VC_NOCPERR = 1 << 5
DEMCR_VC_CHKERR = 1 << 6
DEMCR_VC_STATERR = 1 << 7
DEMCR_VC_BUSERR = 1 << 8
DEMCR_VC_INTERR = 1 << 9
DEMCR_VC_HARDERR = 1 << 10
DEMCR_TRCENA = 1 << 24
DEMCR_WRITABLE = 0x010F_07F1

# DWT (ARMv7-M C1.8).
DWT_CTRL_OFF = 0x000
DWT_CYCCNT_OFF = 0x004
DWT_PCSR_OFF = 0x01C
DWT_CTRL_NUMCOMP = 4 << 28
DWT_CTRL_CYCCNTENA = 1 << 0
DWT_CTRL_WRITABLE = 0x007F_1FFF

# FPB (ARMv7-M C1.11, FPBv1).
FP_CTRL_OFF = 0x000
FP_REMAP_OFF = 0x004
FP_COMP0_OFF = 0x008
FP_NUM_CODE = 6
FP_NUM_LIT = 2
FP_CTRL_ENABLE = 1 << 0
FP_CTRL_KEY = 1 << 1
FP_REMAP_RMPSPT = 1 << 29
FP_COMP_ENABLE = 1 << 0
FP_COMP_ADDR_MASK = 0x1FFF_FFFC
FP_COMP_REPLACE_SHIFT = 30

# DBGMCU (RM0090 38.16).
DBGMCU_APB1_FZ_DBG_IWDG_STOP = 1 << 12
DBGMCU_CR_WRITABLE = 0x0000_00E7  # DBG_SLEEP, DBG_STOP, DBG_STANDBY, TRACE_IOEN, TRACE_MODE
DBGMCU_APB1_FZ_WRITABLE = 0x07E0_1DFF
DBGMCU_APB2_FZ_WRITABLE = 0x0007_0003

# --- CoreSight identification (Cortex-M4 TRM; ARM JEP106 0x43B: PIDR1[7:4]=0xB, PIDR2[2:0]=0x3, PIDR4=0x04) ---
PIDR4, PIDR0, PIDR1, PIDR2, PIDR3 = 0xFD0, 0xFE0, 0xFE4, 0xFE8, 0xFEC
CIDR0, CIDR1, CIDR2, CIDR3 = 0xFF0, 0xFF4, 0xFF8, 0xFFC
ROM_MEMTYPE = 0xFCC
CLASS_GENERIC = 0xE0  # CIDR1 of a "generic IP" component (SCS, DWT, FPB, ITM)
CLASS_CORESIGHT = 0x90  # CIDR1 of a CoreSight component (TPIU, ETM)
CLASS_ROM_TABLE = 0x10


def _id_block(pid: Tuple[int, int, int, int, int], cidr1: int) -> Dict[int, int]:
    """ID registers of one component: pid = (PIDR0, PIDR1, PIDR2, PIDR3, PIDR4)."""
    return {PIDR0: pid[0], PIDR1: pid[1], PIDR2: pid[2], PIDR3: pid[3], PIDR4: pid[4],
            CIDR0: 0x0D, CIDR1: cidr1, CIDR2: 0x05, CIDR3: 0xB1}


ITM_IDS = _id_block((0x01, 0xB0, 0x3B, 0x00, 0x04), CLASS_GENERIC)
DWT_IDS = _id_block((0x02, 0xB0, 0x3B, 0x00, 0x04), CLASS_GENERIC)
FPB_IDS = _id_block((0x03, 0xB0, 0x2B, 0x00, 0x04), CLASS_GENERIC)
SCS_IDS = _id_block((0x0C, 0xB0, 0x0B, 0x00, 0x04), CLASS_GENERIC)
TPIU_IDS = _id_block((0xA1, 0xB9, 0x0B, 0x00, 0x04), CLASS_CORESIGHT)
ETM_IDS = _id_block((0x25, 0xB9, 0x4B, 0x00, 0x04), CLASS_CORESIGHT)
# ST's ROM table: JEP106 0x20 (bank 0) -> PIDR1[7:4]=0x0, PIDR2[2:0]=0x2 with JEDEC bit 3; part 0x413.
ST_ROM_IDS = _id_block((0x13, 0x04, 0x0A, 0x00, 0x00), CLASS_ROM_TABLE)
# A clone's ROM table: ARM's generic Cortex-M4 ROM table (JEP106 0x43B, part 0x4C4).
CLONE_ROM_IDS = _id_block((0xC4, 0xB4, 0x0B, 0x00, 0x04), CLASS_ROM_TABLE)


def _rom_entry(component_base: int) -> int:
    """A 32-bit-format, present ROM table entry: signed offset from the ROM table base."""
    return ((component_base - ROM_TABLE_BASE) & 0xFFFF_F000) | 0x3


ROM_ENTRIES = [_rom_entry(b) for b in (SCS_BASE, DWT_BASE, FPB_BASE, ITM_BASE, TPIU_BASE, ETM_BASE)] + [0]

# TPIU registers with a non-zero reset value (CoreSight TPIU, Cortex-M4 TRM 11.2).
TPIU_RESET = {0x000: 0x0000_000B, 0x004: 0x0000_0001, 0x0F0: 0x0000_0001, 0x300: 0x0000_0008,
              0x304: 0x0000_0102, 0xFC8: 0x0000_0CA0, 0xFCC: 0x0000_0011}


def _lanes(offset: int, size: int) -> Tuple[int, int]:
    """(shift, mask) of the byte lanes a `size`-byte access at `offset` uses within its word."""
    return (offset & 3) * 8, (1 << (8 * size)) - 1


class DebugCore(Protocol):
    """What the System Control Space reaches of the core (core.py): the state DHCSR, DFSR, DEMCR and ICSR
    show, the register file (DCRSR/DCRDR), halting and stepping, reset requests (AIRCR) and the FPB's
    breakpoints."""

    halted: bool
    sleeping: bool
    lockup: bool
    held_in_reset: bool
    debugen: bool  # DHCSR.C_DEBUGEN
    demcr: int
    dfsr: int
    retired: bool  # DHCSR.S_RETIRE_ST
    reset_seen: bool  # DHCSR.S_RESET_ST
    active_exception: int  # IPSR

    def halt(self, dfsr_bits: int) -> None: ...

    def resume(self) -> None: ...

    def step(self) -> None: ...

    def read_core_register(self, regsel: int) -> int: ...

    def write_core_register(self, regsel: int, value: int) -> None: ...

    def request_reset(self, cause: str) -> None: ...

    def set_breakpoints(self, addresses: Tuple[int, ...]) -> None: ...


class SystemControlSpace:
    """Registers of the PPB (0xE000_0000..0xE00F_FFFF), shared by the core and the debugger.

    `read(address, size, from_core)` / `write(address, value, size, from_core)` take absolute addresses; a
    sub-word access reads or merges its byte lanes of the 32-bit register. Raises BusFault for addresses
    outside the modelled blocks. `from_core` matters only where the architecture distinguishes: C_DEBUGEN and
    the other DHCSR control bits can be written by the debugger only (ARMv7-M C1.6.2); core writes to DHCSR
    are ignored.
    """

    def __init__(self, core: DebugCore, clock: VirtualClock, part: Part, clone: bool,
                 freeze_changed: Callable[[], None]) -> None:
        self._core = core
        self._clock = clock
        self._part = part
        self._freeze_changed = freeze_changed  # the chip: the IWDG follows DBGMCU_APB1_FZ.DBG_IWDG_STOP
        self.rom_ids = CLONE_ROM_IDS if clone else ST_ROM_IDS
        self.dcrdr = 0
        self.c_step = False
        self.c_maskints = False
        self.dbgmcu_cr = 0
        self.dbgmcu_apb1_fz = 0
        self.dbgmcu_apb2_fz = 0
        self._plain: Dict[int, int] = {}
        self.reset_debug()
        self.reset_system()

    # --- resets -------------------------------------------------------------------------------------------
    def reset_system(self) -> None:
        """A system (or core) reset: SCB, SysTick, NVIC, FPU control back to their reset values."""
        self.vtor = 0
        self.prigroup = 0
        self.cfsr = 0
        self.hfsr = 0
        self.mmfar = 0
        self.bfar = 0
        self.ccr = CCR_RESET
        self.actlr = 0
        self.cpacr = 0
        self.fpccr = FPCCR_RESET
        self.nvic_enabled = [0] * 8
        self.nvic_pending = [0] * 8
        for offset in list(self._plain):
            if SCS_BASE <= offset < SCS_BASE + 0x1000:
                del self._plain[offset]

    def reset_debug(self) -> None:
        """A power-on reset of the debug domain: DWT, FPB, ITM, DBGMCU (RM0090 38.16: DBGMCU is reset by POR
        only). DHCSR.C_DEBUGEN and DEMCR live in the core and are cleared there."""
        self.dwt_ctrl = 0
        self._cyc_value = 0
        self._cyc_since_ps = 0
        self._cyc_counting = False
        self.fp_ctrl_enable = False
        self.fp_comp = [0] * (FP_NUM_CODE + FP_NUM_LIT)
        self.fp_remap = 0
        self.dbgmcu_cr = 0
        self.dbgmcu_apb1_fz = 0
        self.dbgmcu_apb2_fz = 0
        self._plain = {k: v for k, v in self._plain.items() if SCS_BASE <= k < SCS_BASE + 0x1000}
        self._core.set_breakpoints(self.breakpoint_addresses())

    # --- DWT CYCCNT: derived from the virtual clock -------------------------------------------------------
    def _cyc_should_count(self) -> bool:
        core = self._core
        return (bool(self.dwt_ctrl & DWT_CTRL_CYCCNTENA) and bool(core.demcr & DEMCR_TRCENA)
                and not core.halted and not core.held_in_reset)

    def sync_cycle_counter(self) -> None:
        """Bring CYCCNT up to the clock, then count (or not) from now on. The chip calls this whenever the
        core halts, resumes or resets; CYCCNT does not count while the core is halted (ARMv7-M C1.8.6)."""
        now = self._clock.now_ps
        if self._cyc_counting:
            cycles = (now - self._cyc_since_ps) // CYCLE_PS
            self._cyc_value = (self._cyc_value + cycles) & 0xFFFF_FFFF
            self._cyc_since_ps += cycles * CYCLE_PS
        else:
            self._cyc_since_ps = now
        counting = self._cyc_should_count()
        if counting != self._cyc_counting:
            self._cyc_since_ps = now
        self._cyc_counting = counting

    @property
    def cyccnt(self) -> int:
        self.sync_cycle_counter()
        return self._cyc_value

    # --- FPB breakpoints ------------------------------------------------------------------------------------
    def breakpoint_addresses(self) -> Tuple[int, ...]:
        """Halfword addresses where an enabled FPB code comparator halts the core (FPBv1: code region only)."""
        if not self.fp_ctrl_enable:
            return ()
        out = []
        for comp in self.fp_comp[:FP_NUM_CODE]:
            if not comp & FP_COMP_ENABLE:
                continue
            base = comp & FP_COMP_ADDR_MASK
            replace = comp >> FP_COMP_REPLACE_SHIFT
            if replace in (1, 3):
                out.append(base)
            if replace in (2, 3):
                out.append(base + 2)
        return tuple(out)

    # --- the bus interface ----------------------------------------------------------------------------------
    def read(self, address: int, size: int = 4, from_core: bool = False) -> int:
        shift, mask = _lanes(address, size)
        return (self._read_word(address & ~3) >> shift) & mask

    def write(self, address: int, value: int, size: int = 4, from_core: bool = False) -> None:
        shift, mask = _lanes(address, size)
        word_address = address & ~3
        if size != 4:
            # Sub-word writes merge into the current register value (registers with side effects see the
            # merged word; a partial DHCSR write therefore lacks DBGKEY and is ignored, as on hardware).
            old = self._peek_word(word_address)
            value = (old & ~(mask << shift)) | ((value & mask) << shift)
        self._write_word(word_address, value & 0xFFFF_FFFF, from_core)

    def _block(self, address: int) -> Tuple[str, int]:
        for name, base in (("itm", ITM_BASE), ("dwt", DWT_BASE), ("fpb", FPB_BASE), ("scs", SCS_BASE),
                           ("tpiu", TPIU_BASE), ("etm", ETM_BASE), ("dbgmcu", DBGMCU_BASE),
                           ("rom", ROM_TABLE_BASE)):
            if base <= address < base + 0x1000:
                return name, address - base
        raise BusFault(f"no debug component at {address:#010x} (PPB)")

    def _peek_word(self, address: int) -> int:
        """The stored value of a register without read side effects (for sub-word write merges)."""
        name, offset = self._block(address)
        if name == "scs" and offset == DHCSR_OFF:
            return 0
        return self._read_word(address)

    def _read_word(self, address: int) -> int:
        name, offset = self._block(address)
        if name == "scs":
            return self._read_scs(offset)
        if name == "dwt":
            return self._read_dwt(offset)
        if name == "fpb":
            return self._read_fpb(offset)
        if name == "dbgmcu":
            return self._read_dbgmcu(offset)
        if name == "rom":
            return self._read_rom(offset)
        ids = {"itm": ITM_IDS, "tpiu": TPIU_IDS, "etm": ETM_IDS}[name]
        if offset in ids:
            return ids[offset]
        if name == "itm" and offset < 0x80:
            return 1  # stimulus port: FIFO ready
        default = TPIU_RESET.get(offset, 0) if name == "tpiu" else 0
        return self._plain.get(address, default)

    def _write_word(self, address: int, value: int, from_core: bool) -> None:
        name, offset = self._block(address)
        if name == "scs":
            self._write_scs(offset, value, from_core)
        elif name == "dwt":
            self._write_dwt(offset, value)
        elif name == "fpb":
            self._write_fpb(offset, value)
        elif name == "dbgmcu":
            self._write_dbgmcu(offset, value)
        elif name == "rom":
            return  # read-only
        else:
            ids = {"itm": ITM_IDS, "tpiu": TPIU_IDS, "etm": ETM_IDS}[name]
            if offset not in ids and not (name == "itm" and offset < 0x80):
                self._plain[address] = value

    # --- SCS ------------------------------------------------------------------------------------------------
    def _read_scs(self, offset: int) -> int:
        core = self._core
        if offset in SCS_IDS:
            return SCS_IDS[offset]
        if offset in ID_REGISTERS:
            return ID_REGISTERS[offset]
        if offset == ICTR:
            return ICTR_VALUE
        if NVIC_ISER <= offset < NVIC_ISER + 0x20 or NVIC_ICER <= offset < NVIC_ICER + 0x20:
            return self.nvic_enabled[(offset & 0x1F) >> 2]
        if NVIC_ISPR <= offset < NVIC_ISPR + 0x20 or NVIC_ICPR <= offset < NVIC_ICPR + 0x20:
            return self.nvic_pending[(offset & 0x1F) >> 2]
        if NVIC_IABR <= offset < NVIC_IABR + 0x20:
            return 0
        simple = {
            CPUID: CPUID_VALUE,
            ICSR: core.active_exception & 0x1FF,
            VTOR: self.vtor,
            AIRCR: (AIRCR_VECTKEYSTAT << 16) | (self.prigroup << AIRCR_PRIGROUP_SHIFT),
            ACTLR: self.actlr,
            CCR: self.ccr,
            CFSR: self.cfsr,
            HFSR: self.hfsr,
            DFSR: core.dfsr,
            MMFAR: self.mmfar,
            BFAR: self.bfar,
            CPACR: self.cpacr,
            MPU_TYPE: MPU_TYPE_VALUE,
            DEMCR_OFF: core.demcr,
            DCRDR_OFF: self.dcrdr,
            DCRSR_OFF: 0,
            STIR: 0,
            FPCCR: self.fpccr,
            MVFR0: MVFR0_VALUE,
            MVFR1: MVFR1_VALUE,
        }
        if offset in simple:
            return simple[offset]
        if offset == DHCSR_OFF:
            return self._read_dhcsr()
        return self._plain.get(SCS_BASE + offset, 0)

    def _read_dhcsr(self) -> int:
        core = self._core
        value = S_REGRDY
        if core.debugen:
            value |= C_DEBUGEN
            value |= C_STEP if self.c_step else 0
            value |= C_MASKINTS if self.c_maskints else 0
        if core.halted:
            value |= C_HALT | S_HALT
        if core.sleeping:
            value |= S_SLEEP
        if core.lockup:
            value |= S_LOCKUP
        # S_RETIRE_ST and S_RESET_ST are sticky and clear on read (ARMv7-M C1.6.2).
        if core.retired:
            value |= S_RETIRE_ST
            core.retired = False
        if core.reset_seen:
            value |= S_RESET_ST
            core.reset_seen = False
        return value

    def _write_scs(self, offset: int, value: int, from_core: bool) -> None:
        core = self._core
        if offset in SCS_IDS or offset in ID_REGISTERS or offset in (CPUID, ICTR, MPU_TYPE, MVFR0, MVFR1):
            return  # read-only
        if NVIC_ISER <= offset < NVIC_ISER + 0x20:
            self.nvic_enabled[(offset & 0x1F) >> 2] |= value
        elif NVIC_ICER <= offset < NVIC_ICER + 0x20:
            self.nvic_enabled[(offset & 0x1F) >> 2] &= ~value
        elif NVIC_ISPR <= offset < NVIC_ISPR + 0x20:
            self.nvic_pending[(offset & 0x1F) >> 2] |= value
        elif NVIC_ICPR <= offset < NVIC_ICPR + 0x20:
            self.nvic_pending[(offset & 0x1F) >> 2] &= ~value
        elif NVIC_IABR <= offset < NVIC_IABR + 0x20:
            return
        elif offset == VTOR:
            self.vtor = value & VTOR_MASK
        elif offset == AIRCR:
            self._write_aircr(value)
        elif offset == ACTLR:
            self.actlr = value & ACTLR_WRITABLE
        elif offset == CCR:
            self.ccr = (value & 0x0000_031B) | CCR_RESET
        elif offset == CFSR:
            self.cfsr &= ~value  # write 1 to clear
        elif offset == HFSR:
            self.hfsr &= ~value
        elif offset == DFSR:
            core.dfsr &= ~value
        elif offset == MMFAR:
            self.mmfar = value
        elif offset == BFAR:
            self.bfar = value
        elif offset == CPACR:
            self.cpacr = value & CPACR_MASK
        elif offset == FPCCR:
            self.fpccr = value & 0xC000_01FB
        elif offset == DHCSR_OFF:
            if not from_core:
                self._write_dhcsr(value)
        elif offset == DCRSR_OFF:
            regsel = value & DCRSR_REGSEL_MASK
            if value & DCRSR_REGWNR:
                core.write_core_register(regsel, self.dcrdr)
            else:
                self.dcrdr = core.read_core_register(regsel)
        elif offset == DCRDR_OFF:
            self.dcrdr = value
        elif offset == DEMCR_OFF:
            core.demcr = value & DEMCR_WRITABLE
            self.sync_cycle_counter()
        elif offset == STIR:
            return
        else:
            self._plain[SCS_BASE + offset] = value

    def _write_aircr(self, value: int) -> None:
        if value >> 16 != AIRCR_VECTKEY:
            return  # ARMv7-M B3.2.6: writes without VECTKEY are ignored
        self.prigroup = (value >> AIRCR_PRIGROUP_SHIFT) & 7
        if value & AIRCR_SYSRESETREQ:
            self._core.request_reset("sysresetreq")
        elif value & AIRCR_VECTRESET:
            self._core.request_reset("vectreset")

    def _write_dhcsr(self, value: int) -> None:
        """Debugger write to DHCSR: needs DBGKEY in bits 31:16 (ARMv7-M C1.6.2)."""
        if value >> 16 != DHCSR_DBGKEY:
            return
        core = self._core
        core.debugen = bool(value & C_DEBUGEN)
        if not core.debugen:
            self.c_step = self.c_maskints = False
            if core.halted:
                core.resume()  # clearing C_DEBUGEN leaves Debug state
            return
        self.c_maskints = bool(value & C_MASKINTS)
        self.c_step = bool(value & C_STEP)
        if value & C_HALT:
            if not core.halted:
                core.halt(DFSR_HALTED)
        elif core.halted:
            if self.c_step:
                core.step()
            else:
                core.resume()

    # --- DWT ------------------------------------------------------------------------------------------------
    def _read_dwt(self, offset: int) -> int:
        if offset in DWT_IDS:
            return DWT_IDS[offset]
        if offset == DWT_CTRL_OFF:
            return DWT_CTRL_NUMCOMP | self.dwt_ctrl
        if offset == DWT_CYCCNT_OFF:
            return self.cyccnt
        if offset == DWT_PCSR_OFF:
            core = self._core
            return 0xFFFF_FFFF if core.halted else core.read_core_register(15)
        return self._plain.get(DWT_BASE + offset, 0)

    def _write_dwt(self, offset: int, value: int) -> None:
        if offset in DWT_IDS or offset == DWT_PCSR_OFF:
            return
        if offset == DWT_CTRL_OFF:
            self.sync_cycle_counter()
            self.dwt_ctrl = value & DWT_CTRL_WRITABLE
            self.sync_cycle_counter()
        elif offset == DWT_CYCCNT_OFF:
            self.sync_cycle_counter()
            self._cyc_value = value & 0xFFFF_FFFF
            self._cyc_since_ps = self._clock.now_ps
        else:
            self._plain[DWT_BASE + offset] = value

    # --- FPB ------------------------------------------------------------------------------------------------
    def _read_fpb(self, offset: int) -> int:
        if offset in FPB_IDS:
            return FPB_IDS[offset]
        if offset == FP_CTRL_OFF:
            num_code = ((FP_NUM_CODE >> 4) << 12) | ((FP_NUM_CODE & 0xF) << 4)
            return num_code | (FP_NUM_LIT << 8) | (FP_CTRL_ENABLE if self.fp_ctrl_enable else 0)
        if offset == FP_REMAP_OFF:
            return FP_REMAP_RMPSPT | self.fp_remap
        index = (offset - FP_COMP0_OFF) >> 2
        if 0 <= index < len(self.fp_comp) and offset & 3 == 0:
            return self.fp_comp[index]
        return self._plain.get(FPB_BASE + offset, 0)

    def _write_fpb(self, offset: int, value: int) -> None:
        if offset in FPB_IDS:
            return
        if offset == FP_CTRL_OFF:
            if value & FP_CTRL_KEY:  # FP_CTRL.ENABLE changes only with KEY=1
                self.fp_ctrl_enable = bool(value & FP_CTRL_ENABLE)
                self._core.set_breakpoints(self.breakpoint_addresses())
            return
        if offset == FP_REMAP_OFF:
            self.fp_remap = value & 0x1FFF_FFE0
            return
        index = (offset - FP_COMP0_OFF) >> 2
        if 0 <= index < len(self.fp_comp):
            self.fp_comp[index] = value & 0xDFFF_FFFD
            self._core.set_breakpoints(self.breakpoint_addresses())
            return
        self._plain[FPB_BASE + offset] = value

    # --- DBGMCU ---------------------------------------------------------------------------------------------
    def _read_dbgmcu(self, offset: int) -> int:
        address = DBGMCU_BASE + offset
        if address == DBGMCU_IDCODE:
            part = self._part
            return (part.rev_id << 16) | part.dev_id
        if address == DBGMCU_CR:
            return self.dbgmcu_cr
        if address == DBGMCU_APB1_FZ:
            return self.dbgmcu_apb1_fz
        if address == DBGMCU_APB2_FZ:
            return self.dbgmcu_apb2_fz
        raise BusFault(f"no DBGMCU register at {address:#010x}")

    def _write_dbgmcu(self, offset: int, value: int) -> None:
        address = DBGMCU_BASE + offset
        if address == DBGMCU_CR:
            self.dbgmcu_cr = value & DBGMCU_CR_WRITABLE
        elif address == DBGMCU_APB1_FZ:
            self.dbgmcu_apb1_fz = value & DBGMCU_APB1_FZ_WRITABLE
            self._freeze_changed()
        elif address == DBGMCU_APB2_FZ:
            self.dbgmcu_apb2_fz = value & DBGMCU_APB2_FZ_WRITABLE
        elif address != DBGMCU_IDCODE:
            raise BusFault(f"no DBGMCU register at {address:#010x}")

    @property
    def iwdg_frozen_when_halted(self) -> bool:
        return bool(self.dbgmcu_apb1_fz & DBGMCU_APB1_FZ_DBG_IWDG_STOP)

    # --- ROM table ------------------------------------------------------------------------------------------
    def _read_rom(self, offset: int) -> int:
        if offset in self.rom_ids:
            return self.rom_ids[offset]
        if offset == ROM_MEMTYPE:
            return 1  # SYSMEM: system memory is present on the bus
        index = offset >> 2
        if offset & 3 == 0 and index < len(ROM_ENTRIES):
            return ROM_ENTRIES[index]
        return 0
