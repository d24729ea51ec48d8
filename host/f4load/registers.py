"""STM32F405/407/415/417 register and bit names used on the host side (RM0090; see ../shared/reference).

Every address and bit the host or the virtual chip relies on is named here once. The stub has its own header
of the same names (stub/), because the two sides of the wire are compiled by different compilers.
"""

# --- Embedded flash interface, RM0090 3.8 -----------------------------------------------------------------
FLASH_BASE = 0x4002_3C00
FLASH_ACR = FLASH_BASE + 0x00
FLASH_KEYR = FLASH_BASE + 0x04
FLASH_OPTKEYR = FLASH_BASE + 0x08
FLASH_SR = FLASH_BASE + 0x0C
FLASH_CR = FLASH_BASE + 0x10
FLASH_OPTCR = FLASH_BASE + 0x14

FLASH_KEY1 = 0x4567_0123
FLASH_KEY2 = 0xCDEF_89AB
FLASH_OPTKEY1 = 0x0819_2A3B
FLASH_OPTKEY2 = 0x4C5D_6E7F

FLASH_SR_EOP = 1 << 0
FLASH_SR_OPERR = 1 << 1
FLASH_SR_WRPERR = 1 << 4
FLASH_SR_PGAERR = 1 << 5
FLASH_SR_PGPERR = 1 << 6
FLASH_SR_PGSERR = 1 << 7
FLASH_SR_BSY = 1 << 16
FLASH_SR_ERRORS = (FLASH_SR_OPERR | FLASH_SR_WRPERR | FLASH_SR_PGAERR | FLASH_SR_PGPERR | FLASH_SR_PGSERR)
FLASH_SR_W1C = FLASH_SR_ERRORS | FLASH_SR_EOP  # write-1-to-clear bits

FLASH_CR_PG = 1 << 0
FLASH_CR_SER = 1 << 1
FLASH_CR_MER = 1 << 2
FLASH_CR_SNB_SHIFT = 3
FLASH_CR_SNB_MASK = 0xF << 3
FLASH_CR_PSIZE_SHIFT = 8
FLASH_CR_PSIZE_MASK = 0x3 << 8
FLASH_CR_STRT = 1 << 16
FLASH_CR_EOPIE = 1 << 24
FLASH_CR_ERRIE = 1 << 25
FLASH_CR_LOCK = 1 << 31
FLASH_CR_RESET = 0x8000_0000

PSIZE_X8, PSIZE_X16, PSIZE_X32, PSIZE_X64 = 0, 1, 2, 3
PSIZE_BYTES = {PSIZE_X8: 1, PSIZE_X16: 2, PSIZE_X32: 4, PSIZE_X64: 8}

FLASH_OPTCR_OPTLOCK = 1 << 0
FLASH_OPTCR_OPTSTRT = 1 << 1
FLASH_OPTCR_BOR_LEV_SHIFT = 2
FLASH_OPTCR_BOR_LEV_MASK = 0x3 << 2
FLASH_OPTCR_WDG_SW = 1 << 5
FLASH_OPTCR_NRST_STOP = 1 << 6
FLASH_OPTCR_NRST_STDBY = 1 << 7
FLASH_OPTCR_RDP_SHIFT = 8
FLASH_OPTCR_RDP_MASK = 0xFF << 8
FLASH_OPTCR_NWRP_SHIFT = 16
FLASH_OPTCR_NWRP_MASK = 0xFFF << 16
FLASH_OPTCR_RESET = 0x0FFF_AAED  # factory value: level 0, no WRP, software watchdog, BOR off, OPTLOCK

RDP_LEVEL0 = 0xAA
RDP_LEVEL2 = 0xCC  # permanent; any other value is level 1

# BOR_LEV field values by the name the command line uses (RM0090 3.8.6: 00 level 3 ... 11 off).
BOR_FIELD = {"3": 0b00, "2": 0b01, "1": 0b10, "off": 0b11}
BOR_LEVEL_NAMES = {0b00: "BOR level 3 (2.70-3.60 V)", 0b01: "BOR level 2 (2.40-2.70 V)",
                   0b10: "BOR level 1 (2.10-2.40 V)", 0b11: "BOR off (1.80-2.10 V)"}

# --- CRC unit, RM0090 4 ----------------------------------------------------------------------------------
CRC_BASE = 0x4002_3000
CRC_DR = CRC_BASE + 0x00
CRC_IDR = CRC_BASE + 0x04
CRC_CR = CRC_BASE + 0x08
CRC_CR_RESET = 1 << 0
CRC_POLY = 0x04C1_1DB7

# --- RCC, RM0090 7.3 -------------------------------------------------------------------------------------
RCC_BASE = 0x4002_3800
RCC_CR = RCC_BASE + 0x00
RCC_CFGR = RCC_BASE + 0x08
RCC_AHB1ENR = RCC_BASE + 0x30
RCC_AHB1ENR_CRCEN = 1 << 12
RCC_CSR = RCC_BASE + 0x74
RCC_CSR_LSION = 1 << 0
RCC_CSR_LSIRDY = 1 << 1
RCC_CSR_RMVF = 1 << 24
RCC_CSR_BORRSTF = 1 << 25
RCC_CSR_PINRSTF = 1 << 26
RCC_CSR_PORRSTF = 1 << 27
RCC_CSR_SFTRSTF = 1 << 28
RCC_CSR_IWDGRSTF = 1 << 29
RCC_CSR_WWDGRSTF = 1 << 30
RCC_CSR_LPWRRSTF = 1 << 31
RESET_FLAG_NAMES = {RCC_CSR_LPWRRSTF: "low-power", RCC_CSR_WWDGRSTF: "window watchdog",
                    RCC_CSR_IWDGRSTF: "independent watchdog", RCC_CSR_SFTRSTF: "software",
                    RCC_CSR_PORRSTF: "power-on/power-down", RCC_CSR_PINRSTF: "NRST pin",
                    RCC_CSR_BORRSTF: "brown-out"}
RESET_FLAGS = sum(RESET_FLAG_NAMES)  # every RCC_CSR reset flag; RMVF clears them all

# --- Independent watchdog, RM0090 19 ---------------------------------------------------------------------
IWDG_BASE = 0x4000_3000
IWDG_KR = IWDG_BASE + 0x00
IWDG_PR = IWDG_BASE + 0x04
IWDG_RLR = IWDG_BASE + 0x08
IWDG_SR = IWDG_BASE + 0x0C
IWDG_KEY_RELOAD = 0xAAAA
IWDG_KEY_ACCESS = 0x5555
IWDG_KEY_START = 0xCCCC
LSI_HZ = 32_000

# --- Debug MCU, RM0090 38.16 -----------------------------------------------------------------------------
DBGMCU_IDCODE = 0xE004_2000
DBGMCU_CR = 0xE004_2004
DBGMCU_APB1_FZ = 0xE004_2008
DBGMCU_APB2_FZ = 0xE004_200C
DBGMCU_APB1_FZ_DBG_IWDG_STOP = 1 << 12
DBGMCU_APB1_FZ_DBG_WWDG_STOP = 1 << 11  # freezes the WWDG while the core is halted (not while the stub runs)
DEV_ID_F40X_41X = 0x413

# --- Cortex-M4 System Control Space (ARMv7-M ARM C1 / B3) -------------------------------------------------
SCS_CPUID = 0xE000_ED00
SCS_AIRCR = 0xE000_ED0C
SCS_DFSR = 0xE000_ED30
DHCSR = 0xE000_EDF0
DHCSR_DBGKEY = 0xA05F << 16  # a DHCSR write takes effect only with this key in bits 31:16 (C1.6.2)
DHCSR_C_DEBUGEN = 1 << 0
DHCSR_S_HALT = 1 << 17
DHCSR_S_LOCKUP = 1 << 19
DHCSR_S_RESET_ST = 1 << 25  # sticky: the core was reset since DHCSR was last read (C1.6.2)
DCRSR = 0xE000_EDF4
DCRDR = 0xE000_EDF8
DEMCR = 0xE000_EDFC
DWT_CTRL = 0xE000_1000
DWT_CYCCNT = 0xE000_1004
ROM_TABLE_BASE = 0xE00F_F000
CPUID_CORTEX_M4_R0P1 = 0x410F_C241
XPSR_THUMB = 1 << 24  # xPSR.T: every entry-point call must set it (B1.4.2)

# --- Window watchdog, RM0090 20.6: CR bit 7 WDGA enables it; only a reset clears it ---------------------------
WWDG_BASE = 0x4000_2C00
WWDG_CR = WWDG_BASE + 0x00
WWDG_CR_WDGA = 1 << 7

# --- DMA controllers, RM0090 10.5: stream x's SxCR at 0x10 + 0x18 * x, bit 0 EN ------------------------------
DMA1_BASE = 0x4002_6000
DMA2_BASE = 0x4002_6400
DMA_STREAMS = 8
DMA_SXCR_EN = 1 << 0


def dma_sxcr(controller_base: int, stream_index: int) -> int:
    """Address of DMAx_SxCR (RM0090 10.5.5)."""
    return controller_base + 0x10 + 0x18 * stream_index
