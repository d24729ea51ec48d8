/*
 * CRC of flash contents by the chip's CRC unit (RM0090 chapter 4): poly 0x04C11DB7, reset value 0xFFFFFFFF,
 * one 32-bit word per write to CRC_DR. Used to verify without reading the flash back over SWD, and to skip
 * sectors whose contents are already right.
 */
#include "stub.h"

/* Result of the last Crc() call. Exported: the host reads it by name. */
F4LOAD_EXPORT uint32_t f4load_crc;

#define CRC_WORDS_PER_REFRESH  0x4000u   /* 64 KB: about 8 ms at 16 MHz */

/*
 * CRC of `words` words from `address`: returned, and kept in f4load_crc. Four words per loop iteration (one
 * load-multiple, four CRC_DR writes): the CRC unit takes a word per AHB write (RM0090 4.3), so the loop
 * bookkeeping is what costs.
 */
uint32_t crc_unit_words(uint32_t address, uint32_t words)
{
    uint32_t enr = RCC_AHB1ENR;
    RCC_AHB1ENR = enr | RCC_AHB1ENR_CRCEN;
    (void)RCC_AHB1ENR;  /* read back: the clock is running before the first CRC access (RM0090 7.3) */
    CRC_CR = CRC_CR_RESET;
    const uint32_t *p = (const uint32_t *)address;
    const uint32_t *const end = p + words;
    while (p < end) {
        const uint32_t *chunk_end = (uint32_t)(end - p) > CRC_WORDS_PER_REFRESH ? p + CRC_WORDS_PER_REFRESH : end;
        watchdog_refresh();
        while (chunk_end - p >= 4) {
            uint32_t a = p[0], b = p[1], c = p[2], d = p[3];
            CRC_DR = a;
            CRC_DR = b;
            CRC_DR = c;
            CRC_DR = d;
            p += 4;
        }
        while (p < chunk_end) {
            CRC_DR = *p++;
        }
    }
    uint32_t crc = CRC_DR;
    f4load_crc = crc;
    if (!(enr & RCC_AHB1ENR_CRCEN)) {
        RCC_AHB1ENR = enr;  /* leave the clock as the application had it */
    }
    return crc;
}
