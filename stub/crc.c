/*
 * CRC of flash contents by the chip's CRC unit (RM0090 chapter 4): poly 0x04C11DB7, reset value 0xFFFFFFFF,
 * one 32-bit word per write to CRC_DR. Used to verify without reading the flash back over SWD, and to skip
 * sectors whose contents are already right.
 */
#include "stub.h"

/* Result of the last Crc() call. Exported: the host reads it by name. */
F4LOAD_EXPORT uint32_t f4load_crc;

#define CRC_WORDS_PER_REFRESH  0x4000u

/* CRC of `words` words from `address`: returned, and kept in f4load_crc. */
uint32_t crc_unit_words(uint32_t address, uint32_t words)
{
    uint32_t enr = RCC_AHB1ENR;
    RCC_AHB1ENR = enr | RCC_AHB1ENR_CRCEN;
    (void)RCC_AHB1ENR;  /* read back: the clock is running before the first CRC access (RM0090 7.3) */
    CRC_CR = CRC_CR_RESET;
    for (uint32_t i = 0u; i < words; i++) {
        CRC_DR = MMIO32(address + 4u * i);
        if ((i & (CRC_WORDS_PER_REFRESH - 1u)) == 0u) {
            watchdog_refresh();
        }
    }
    uint32_t crc = CRC_DR;
    f4load_crc = crc;
    if (!(enr & RCC_AHB1ENR_CRCEN)) {
        RCC_AHB1ENR = enr;  /* leave the clock as the application had it */
    }
    return crc;
}
