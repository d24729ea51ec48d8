/*
 * STM32F405/407/415/417 and Cortex-M4 register names used by the f4load stub.
 *
 * Every address and bit the stub touches is named here once (the Black Magic Probe way); the C files use
 * these names only. Flash facts come from RM0090 chapter 3 (the digest in ../shared/reference/f4-flash.md);
 * core facts from the ARMv7-M Architecture Reference Manual (ARM DDI 0403, chapters B3 and C1).
 * The host side has the same names in host/f4load/registers.py.
 */
#ifndef F4_REGS_H
#define F4_REGS_H

#include <stdint.h>

#define MMIO8(addr)  (*(volatile uint8_t *)(uintptr_t)(addr))
#define MMIO16(addr) (*(volatile uint16_t *)(uintptr_t)(addr))
#define MMIO32(addr) (*(volatile uint32_t *)(uintptr_t)(addr))

/* --- Memory map (RM0090 2.3, 3.3) ------------------------------------------------------------------- */
#define FLASH_MEM_BASE        0x08000000u
#define FLASH_MEM_MAX_SIZE    0x00100000u          /* 1 MB: the largest F40x/41x */
#define F_SIZE_ADDR           0x1FFF7A22u          /* 16 bits: flash size in KB */
#define KB                    1024u

/* Sector map, RM0090 Table 5: sectors 0-3 16 KB, sector 4 64 KB, sectors 5-11 128 KB. */
#define FLASH_SMALL_SECTOR_SHIFT   14u             /* 16 KB */
#define FLASH_SMALL_SECTORS_END    0x00010000u     /* offset where sector 4 starts */
#define FLASH_MEDIUM_SECTOR        4u
#define FLASH_MEDIUM_SECTOR_SIZE   0x00010000u     /* 64 KB */
#define FLASH_LARGE_SECTORS_START  0x00020000u     /* offset where sector 5 starts */
#define FLASH_LARGE_SECTOR_SHIFT   17u             /* 128 KB */
#define FLASH_SECTOR_COUNT_MAX     12u

/* --- Embedded flash interface, RM0090 3.8 (base 0x4002_3C00) ---------------------------------------- */
#define FLASH_BASE            0x40023C00u
#define FLASH_ACR             MMIO32(FLASH_BASE + 0x00u)
#define FLASH_KEYR            MMIO32(FLASH_BASE + 0x04u)
#define FLASH_SR              MMIO32(FLASH_BASE + 0x0Cu)
#define FLASH_CR              MMIO32(FLASH_BASE + 0x10u)
#define FLASH_OPTCR           MMIO32(FLASH_BASE + 0x14u)
#define FLASH_OPTCR_NWRP_SHIFT 16u                /* nWRP 27:16: bit i = 0 write-protects sector i */

#define FLASH_ACR_ICEN        (1u << 9)
#define FLASH_ACR_DCEN        (1u << 10)
#define FLASH_ACR_ICRST       (1u << 11)
#define FLASH_ACR_DCRST       (1u << 12)

#define FLASH_KEY1            0x45670123u
#define FLASH_KEY2            0xCDEF89ABu

#define FLASH_SR_EOP          (1u << 0)
#define FLASH_SR_OPERR        (1u << 1)
#define FLASH_SR_WRPERR       (1u << 4)
#define FLASH_SR_PGAERR       (1u << 5)
#define FLASH_SR_PGPERR       (1u << 6)
#define FLASH_SR_PGSERR       (1u << 7)
#define FLASH_SR_BSY          (1u << 16)
/* No RDERR on this part (bit 8 exists only on F42x/43x). */
#define FLASH_SR_ERRORS       (FLASH_SR_OPERR | FLASH_SR_WRPERR | FLASH_SR_PGAERR | FLASH_SR_PGPERR | FLASH_SR_PGSERR)

#define FLASH_CR_PG           (1u << 0)
#define FLASH_CR_SER          (1u << 1)
#define FLASH_CR_MER          (1u << 2)
#define FLASH_CR_SNB_SHIFT    3u
#define FLASH_CR_SNB_MASK     (0xFu << FLASH_CR_SNB_SHIFT)
#define FLASH_CR_PSIZE_SHIFT  8u
#define FLASH_CR_PSIZE_MASK   (0x3u << FLASH_CR_PSIZE_SHIFT)
#define FLASH_CR_STRT         (1u << 16)
#define FLASH_CR_EOPIE        (1u << 24)
#define FLASH_CR_ERRIE        (1u << 25)
#define FLASH_CR_LOCK         (1u << 31)

/* PSIZE encodings (RM0090 Table 13): access width = 1 << PSIZE bytes. */
#define PSIZE_X8              0u
#define PSIZE_X16             1u
#define PSIZE_X32             2u
#define PSIZE_X64             3u

/* --- CRC calculation unit, RM0090 chapter 4 (base 0x4002_3000) --------------------------------------- */
#define CRC_BASE              0x40023000u
#define CRC_DR                MMIO32(CRC_BASE + 0x00u)
#define CRC_CR                MMIO32(CRC_BASE + 0x08u)
#define CRC_CR_RESET          (1u << 0)

/* --- RCC, RM0090 7.3 (base 0x4002_3800) -------------------------------------------------------------- */
#define RCC_BASE              0x40023800u
#define RCC_CFGR              MMIO32(RCC_BASE + 0x08u)
#define RCC_CFGR_SWS_SHIFT    2u                  /* SWS: the clock actually driving SYSCLK */
#define RCC_CFGR_SWS_MASK     (0x3u << RCC_CFGR_SWS_SHIFT)
#define RCC_CFGR_SWS_HSI      (0x0u << RCC_CFGR_SWS_SHIFT)
#define RCC_AHB1ENR           MMIO32(RCC_BASE + 0x30u)
#define RCC_AHB1ENR_CRCEN     (1u << 12)

/* --- Independent watchdog, RM0090 19.4 (base 0x4000_3000) -------------------------------------------- */
#define IWDG_BASE             0x40003000u
#define IWDG_KR               MMIO32(IWDG_BASE + 0x00u)
#define IWDG_PR               MMIO32(IWDG_BASE + 0x04u)
#define IWDG_RLR              MMIO32(IWDG_BASE + 0x08u)
#define IWDG_SR               MMIO32(IWDG_BASE + 0x0Cu)
#define IWDG_KEY_RELOAD       0xAAAAu
#define IWDG_KEY_ACCESS       0x5555u
#define IWDG_PR_DIV256        6u
#define IWDG_RLR_MAX          0xFFFu              /* 4096 * 256 / 32 kHz = about 32 s */
#define IWDG_SR_PVU           (1u << 0)
#define IWDG_SR_RVU           (1u << 1)

/* --- Cortex-M4 System Control Block and debug (ARMv7-M B3.2, C1.6, C1.8) ----------------------------- */
#define SCB_ACTLR             MMIO32(0xE000E008u)
#define SCB_CCR               MMIO32(0xE000ED14u)
#define SCB_CFSR              MMIO32(0xE000ED28u)
#define SCB_ACTLR_DISDEFWBUF  (1u << 1)            /* Cortex-M4 TRM 4.3.2: makes bus faults precise */
#define SCB_CCR_BFHFNMIGN     (1u << 8)            /* priority -1/-2 handlers ignore data bus faults */
#define SCB_CFSR_BFSR_MASK    (0xFFu << 8)         /* BusFault status byte */
#define DEMCR                 MMIO32(0xE000EDFCu)
#define DEMCR_TRCENA          (1u << 24)
#define DWT_CTRL              MMIO32(0xE0001000u)
#define DWT_CYCCNT_ADDR       0xE0001004u
#define DWT_CYCCNT            MMIO32(DWT_CYCCNT_ADDR)
#define DWT_CTRL_CYCCNTENA    (1u << 0)
#define DWT_CTRL_NOCYCCNT     (1u << 25)

/* After reset the core runs from HSI (RM0090 6.2.2); HSE or the PLL may drive it at up to 168 MHz (DS8626). */
#define HSI_HZ                16000000u
#define SYSCLK_MAX_HZ         168000000u

#endif /* F4_REGS_H */
