/*
 * CRC of flash contents by the chip's CRC unit (RM0090 chapter 4): poly 0x04C11DB7, reset value 0xFFFFFFFF,
 * one 32-bit word per write to CRC_DR. Used to verify without reading the flash back over SWD, and to skip
 * sectors whose contents are already right.
 */
#include "stub.h"

/* Result of the last Crc() call. Exported: the host reads it by name. */
F4LOAD_EXPORT uint32_t f4load_crc;

#define CRC_WORDS_PER_REFRESH  0x4000u

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
    if (!(enr & RCC_AHB1ENR_CRCEN)) {
        RCC_AHB1ENR = enr;  /* leave the clock as the application had it */
    }
    return crc;
}

F4LOAD_EXPORT uint32_t Crc(uint32_t adr, uint32_t sz)
{
    const uint32_t op = F4LOAD_OP_CRC;
    g_stub.stale = 0u;
    if (!g_stub.initialized) {
        return stub_fail(F4LOAD_KIND_NOT_INITIALIZED, op, F4LOAD_SECTOR_NONE, 0u, 0u, 0u);
    }
    struct sector_info s;
    if (sector_of(adr, &s)) {
        return stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, F4LOAD_SECTOR_NONE, F4LOAD_ARG_NOT_FLASH, adr, 0u);
    }
    if ((adr | sz) & 3u) {
        return stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, s.index, F4LOAD_ARG_ALIGNMENT, adr, 0u);
    }
    if (adr + sz < adr) {
        return stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, s.index, F4LOAD_ARG_WRAPS, adr, 0u);
    }
    if (adr + sz > g_stub.flash_end) {
        return stub_fail(F4LOAD_KIND_BEYOND_END, op, s.index, 0u, adr > g_stub.flash_end ? adr : g_stub.flash_end,
                         0u);
    }
    f4load_crc = crc_unit_words(adr, sz / 4u);
    return 0u;
}
