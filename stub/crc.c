/*
 * CRC of flash contents by the chip's CRC unit (RM0090 chapter 4): poly 0x04C11DB7, reset value 0xFFFFFFFF,
 * one 32-bit word per write to CRC_DR. Used to verify without reading the flash back over SWD, and to skip
 * sectors whose contents are already right.
 *
 * The same unit also gives zlib's CRC-32 (what pyocd's smart flash compares, pyocd/flash/builder.py), which
 * is the reflected form of the same polynomial (LSB first) with a final xor: feed each little-endian word
 * bit-reversed (RBIT), so the unit shifts in bit 0 of byte 0 first, as zlib does; then zlib's register is the
 * unit's bit-reversed, and zlib's result its complement. Trailing bytes (a length not a multiple of 4) go
 * through zlib's bitwise update in software.
 */
#include "stub.h"

/* Result of the last Crc() call. Exported: the host reads it by name. */
F4LOAD_EXPORT uint32_t f4load_crc;

#define CRC_WORDS_PER_REFRESH  0x4000u   /* 64 KB: about 8 ms at 16 MHz */
#define ZLIB_CRC32_POLY        0xEDB88320u  /* 0x04C11DB7 bit-reversed: zlib's polynomial, LSB first */

static inline uint32_t bit_reversed(uint32_t x)
{
    uint32_t r;
    __asm("rbit %0, %1" : "=r"(r) : "r"(x));
    return r;
}

/* Clock the CRC unit and reset it; returns RCC_AHB1ENR as found, for crc_unit_result(). */
static uint32_t crc_unit_start(void)
{
    uint32_t enr = RCC_AHB1ENR;
    RCC_AHB1ENR = enr | RCC_AHB1ENR_CRCEN;
    (void)RCC_AHB1ENR;  /* read back: the clock is running before the first CRC access (RM0090 7.3) */
    CRC_CR = CRC_CR_RESET;
    return enr;
}

/* CRC_DR, then the clock as the application had it. */
static uint32_t crc_unit_result(uint32_t enr)
{
    uint32_t crc = CRC_DR;
    if (!(enr & RCC_AHB1ENR_CRCEN)) {
        RCC_AHB1ENR = enr;
    }
    return crc;
}

/*
 * Feed `blocks` blocks of 8 words from `p` to CRC_DR: one load-multiple and eight stores per block. The CRC unit
 * takes a word per AHB write (RM0090 4.3); what costs is the loop around the stores, so it is unrolled and in
 * assembly (the compiler spills and re-reads otherwise). Returns the address after the last word.
 */
__attribute__((noinline, section(".text.hot"))) static const uint32_t *crc_feed_blocks(const uint32_t *p,
                                                                                      uint32_t blocks)
{
    register const uint32_t *r0 __asm__("r0") = p;
    register uint32_t r1 __asm__("r1") = blocks;
    __asm volatile(
        "   movw    r2, %[lo]\n"
        "   movt    r2, %[hi]\n"
        "1: ldmia   r0!, {r3, r4, r5, r6, r7, r8, r9, r10}\n"
        "   str     r3, [r2]\n"
        "   str     r4, [r2]\n"
        "   str     r5, [r2]\n"
        "   str     r6, [r2]\n"
        "   str     r7, [r2]\n"
        "   str     r8, [r2]\n"
        "   str     r9, [r2]\n"
        "   str     r10, [r2]\n"
        "   subs    r1, r1, #1\n"
        "   bne     1b\n"
        : "+r"(r0), "+r"(r1)
        : [lo] "i"(CRC_BASE & 0xFFFFu), [hi] "i"(CRC_BASE >> 16)
        : "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "cc", "memory");
    return r0;
}

/*
 * Copy `blocks` blocks of 8 words from `src` to `dst` (flash to RAM for the stream's COPY): one load-multiple and
 * one store-multiple each. Lives here beside the CRC feed, the other bulk reader of flash.
 */
void copy_blocks(uint32_t dst, uint32_t src, uint32_t blocks)
{
    register uint32_t r0 __asm__("r0") = dst;
    register uint32_t r1 __asm__("r1") = src;
    register uint32_t r2 __asm__("r2") = blocks;
    __asm volatile(
        "1: ldmia   r1!, {r3, r4, r5, r6, r7, r8, r9, r10}\n"
        "   stmia   r0!, {r3, r4, r5, r6, r7, r8, r9, r10}\n"
        "   subs    r2, r2, #1\n"
        "   bne     1b\n"
        : "+r"(r0), "+r"(r1), "+r"(r2)
        :
        : "r3", "r4", "r5", "r6", "r7", "r8", "r9", "r10", "cc", "memory");
}

/*
 * CRC of `words` words from `address`: returned, and kept in f4load_crc. The IWDG is refreshed every 64 KB.
 */
uint32_t crc_unit_words(uint32_t address, uint32_t words)
{
    uint32_t enr = crc_unit_start();
    const uint32_t *p = (const uint32_t *)address;
    while (words >= 8u) {
        uint32_t now = words > CRC_WORDS_PER_REFRESH ? CRC_WORDS_PER_REFRESH : words & ~7u;
        watchdog_refresh();
        p = crc_feed_blocks(p, now / 8u);
        words -= now;
    }
    while (words--) {
        CRC_DR = *p++;
    }
    uint32_t crc = crc_unit_result(enr);
    f4load_crc = crc;
    return crc;
}

/* zlib's crc32() of the `size` bytes at the word-aligned `address` (see the top of this file). */
uint32_t zlib_crc32(uint32_t address, uint32_t size)
{
    uint32_t enr = crc_unit_start();
    const uint32_t *word = (const uint32_t *)address;
    uint32_t words = size / 4u;
    for (uint32_t i = 0u; i < words; i++) {
        if ((i & (CRC_WORDS_PER_REFRESH - 1u)) == 0u) {
            watchdog_refresh();
        }
        CRC_DR = bit_reversed(word[i]);
    }
    uint32_t reg = bit_reversed(crc_unit_result(enr));  /* zlib's register, before its final xor */
    const uint8_t *p = (const uint8_t *)(address + words * 4u);
    const uint8_t *const end = (const uint8_t *)(address + size);
    while (p < end) {
        reg ^= *p++;
        for (uint32_t bit = 0u; bit < 8u; bit++) {
            reg = (reg >> 1) ^ (ZLIB_CRC32_POLY & (0u - (reg & 1u)));
        }
    }
    return ~reg;
}
