/*
 * The CMSIS-Pack flash algorithm entry points (Init, UnInit, EraseSector, EraseChip, ProgramPage, Verify,
 * BlankCheck, plus Crc) and their argument checks. The contract is written down in f4load_protocol.h.
 */
#include "stub.h"

/* Config word: the host writes it after loading the blob and before Init (pyocd passes clk = 0). */
F4LOAD_EXPORT uint32_t f4load_config = F4LOAD_CONFIG_DEFAULT;

struct stub_state g_stub;

/* The header's layouts, as the host's cffi sees them (tests/test_protocol.py checks the same numbers). */
_Static_assert(sizeof(struct f4load_error) == 44u, "f4load_error is 11 words");
_Static_assert(sizeof(((struct f4load_queue *)0)->slots) / sizeof(struct f4load_command) == F4LOAD_QUEUE_SLOTS,
               "queue slots match F4LOAD_QUEUE_SLOTS");

/* Which flash sizes F_SIZE may name on an F405/407/415/417 (RM0090 1: 512 KB xE, 1 MB xG parts). */
#define F_SIZE_MIN_KB  512u
#define F_SIZE_MAX_KB  1024u

/* CMSIS Init fnc values. */
#define FNC_VERIFY     3u

uint32_t not_initialized(uint32_t op)
{
    g_stub.stale = 0u;
    return g_stub.initialized ? 0u : stub_fail(F4LOAD_KIND_NOT_INITIALIZED, op, F4LOAD_SECTOR_NONE, 0u, 0u, 0u);
}

/*
 * [adr, adr + sz) must lie in main flash of this part. Addresses outside the 1 MB map are bad arguments;
 * addresses inside it but past F_SIZE (sectors 8-11 of a 512 KB part) are BEYOND_END, reported at the first
 * address that is not there.
 */
uint32_t check_range(uint32_t op, uint32_t adr, uint32_t sz)
{
    struct sector_info s;
    if (sector_of(adr, &s)) {
        return stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, F4LOAD_SECTOR_NONE, F4LOAD_ARG_NOT_FLASH, adr, 0u);
    }
    if (adr + sz < adr) {
        return stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, s.index, F4LOAD_ARG_WRAPS, adr, 0u);
    }
    if (adr + sz > g_stub.flash_end) {
        uint32_t first_missing = adr > g_stub.flash_end ? adr : g_stub.flash_end;
        return stub_fail(F4LOAD_KIND_BEYOND_END, op, s.index, 0u, first_missing, 0u);
    }
    return 0u;
}

/*
 * Init: prepare the clock for timeouts, the watchdog, the caches and the flash interface.
 * Interrupts are masked (PRIMASK) and left masked: the application's handlers must not run while the flash is
 * being changed under them; the debugger resets the chip after flashing.
 */
F4LOAD_EXPORT uint32_t Init(uint32_t adr, uint32_t clk, uint32_t fnc)
{
    (void)adr;
    const uint32_t op = F4LOAD_OP_INIT;
    __asm volatile("cpsid i" ::: "memory");
    g_stub.initialized = 0u;
    g_stub.stale = 0u;
    g_stub.waited_ms = 0u;
    g_stub.psize = PSIZE_X8;  /* a valid index for the timeout table until the config is read */

    uint32_t f_size_kb = MMIO16(F_SIZE_ADDR);
    stub_record_reset(f_size_kb * KB);

    uint32_t config = f4load_config;
    uint32_t mhz = (config & F4LOAD_CONFIG_CLOCK_MASK) >> F4LOAD_CONFIG_CLOCK_SHIFT;
    uint32_t hz = clk ? clk : (mhz ? mhz * 1000000u : HSI_HZ);
    g_stub.cycles_per_ms = hz / 1000u;
    if (cycle_counter_start()) {
        return stub_fail(F4LOAD_KIND_NO_CYCLE_COUNTER, op, F4LOAD_SECTOR_NONE, 0u, (uint32_t)&DWT_CTRL, 0u);
    }
    g_stub.iwdg = 0u;
    if (!(config & F4LOAD_CONFIG_NO_IWDG)) {
        watchdog_stretch();
    }
    uint32_t psize = config & F4LOAD_CONFIG_PSIZE_MASK;
    if (psize > PSIZE_X32) {
        return stub_fail(F4LOAD_KIND_BAD_CONFIG, op, F4LOAD_SECTOR_NONE, 0u, config, 0u);
    }
    g_stub.psize = psize;
    if (f_size_kb < F_SIZE_MIN_KB || f_size_kb > F_SIZE_MAX_KB) {
        return stub_fail(F4LOAD_KIND_BAD_FLASH_SIZE, op, F4LOAD_SECTOR_NONE, 0u, F_SIZE_ADDR, 0u);
    }
    g_stub.flash_end = FLASH_MEM_BASE + f_size_kb * KB;
    flash_caches_off();

    /* Verify only reads: leave CR locked then (no key writes, no risk of a bus fault). */
    if (fnc != FNC_VERIFY) {
        uint32_t r = flash_begin(op, F4LOAD_SECTOR_NONE, FLASH_MEM_BASE, erase_timeout_ms(2u));
        if (r) {
            return r;
        }
    }
    g_stub.initialized = 1u;
    return 0u;
}

/*
 * UnInit: lock FLASH_CR whatever happened before. The one case where it cannot: BSY still set (a CR write
 * would stall the bus until BSY clears, possibly forever); then report the timeout, and the host resets.
 */
F4LOAD_EXPORT uint32_t UnInit(uint32_t fnc)
{
    (void)fnc;
    g_stub.stale = 0u;
    g_stub.initialized = 0u;
    if (g_stub.cycles_per_ms == 0u) {  /* never initialised: nothing to time with, CR untouched by us */
        g_stub.cycles_per_ms = HSI_HZ / 1000u;
    }
    uint32_t sr = flash_wait_idle(erase_timeout_ms(2u));
    if (sr & FLASH_SR_BSY) {
        return stub_fail(F4LOAD_KIND_BSY_TIMEOUT, F4LOAD_OP_UNINIT, F4LOAD_SECTOR_NONE, 0u, 0u, sr);
    }
    flash_lock();
    flash_caches_restore();
    return 0u;
}

/* Erase the sector that starts at `adr` (shared by EraseSector and Stream). */
uint32_t erase_sector_at(uint32_t op, uint32_t adr)
{
    struct sector_info s;
    if (sector_of(adr, &s)) {
        return stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, F4LOAD_SECTOR_NONE, F4LOAD_ARG_NOT_FLASH, adr, 0u);
    }
    if (adr != s.start) {
        return stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, s.index, F4LOAD_ARG_NOT_SECTOR_START, adr, 0u);
    }
    if (adr >= g_stub.flash_end) {
        return stub_fail(F4LOAD_KIND_BEYOND_END, op, s.index, 0u, adr, 0u);
    }
    return flash_erase_sector(&s);
}

F4LOAD_EXPORT uint32_t EraseSector(uint32_t adr)
{
    const uint32_t op = F4LOAD_OP_ERASE_SECTOR;
    uint32_t r = not_initialized(op);
    return r ? r : erase_sector_at(op, adr);
}

F4LOAD_EXPORT uint32_t EraseChip(void)
{
    uint32_t r = not_initialized(F4LOAD_OP_ERASE_CHIP);
    return r ? r : flash_erase_chip();
}

F4LOAD_EXPORT uint32_t ProgramPage(uint32_t adr, uint32_t sz, const uint8_t *buf)
{
    const uint32_t op = F4LOAD_OP_PROGRAM;
    uint32_t r = not_initialized(op);
    if (!r) {
        r = check_range(op, adr, sz);
    }
    if (!r && sz) {
        r = flash_program(adr, sz, buf);
    }
    return r;
}

/* CMSIS Verify: adr + sz on success, else the first differing address (the record says more). */
F4LOAD_EXPORT uint32_t Verify(uint32_t adr, uint32_t sz, const uint8_t *buf)
{
    const uint32_t op = F4LOAD_OP_VERIFY;
    if (not_initialized(op) || check_range(op, adr, sz)) {
        return adr;
    }
    for (uint32_t i = 0u; i < sz; i++) {
        uint32_t have = MMIO8(adr + i);
        if (have != buf[i]) {
            struct sector_info s;
            uint32_t sector = sector_of(adr + i, &s) ? F4LOAD_SECTOR_NONE : s.index;
            stub_fail_values(F4LOAD_KIND_VERIFY_MISMATCH, op, sector, F4LOAD_VERIFY_COMPARE, adr + i, buf[i], have);
            return adr + i;
        }
        if ((i & 0xFFFu) == 0u) {
            watchdog_refresh();
        }
    }
    return adr + sz;
}

/* CMSIS BlankCheck: 0 when every byte is (pat & 0xFF), else NOT_BLANK with the address in the record. */
F4LOAD_EXPORT uint32_t BlankCheck(uint32_t adr, uint32_t sz, uint32_t pat)
{
    const uint32_t op = F4LOAD_OP_BLANK_CHECK;
    uint32_t r = not_initialized(op);
    if (!r) {
        r = check_range(op, adr, sz);
    }
    if (r) {
        return r;
    }
    uint32_t want = pat & 0xFFu;
    for (uint32_t i = 0u; i < sz; i++) {
        uint32_t have = MMIO8(adr + i);
        if (have != want) {
            struct sector_info s;
            uint32_t sector = sector_of(adr + i, &s) ? F4LOAD_SECTOR_NONE : s.index;
            return stub_fail_values(F4LOAD_KIND_NOT_BLANK, op, sector, 0u, adr + i, want, have);
        }
        if ((i & 0xFFFu) == 0u) {
            watchdog_refresh();
        }
    }
    return 0u;
}

/* CRC of the word-aligned range [adr, adr + sz) into *value and f4load_crc (shared by Crc and Stream). */
uint32_t crc_range(uint32_t op, uint32_t adr, uint32_t sz, uint32_t *value)
{
    uint32_t r = check_range(op, adr, sz);
    if (!r && ((adr | sz) & 3u)) {
        struct sector_info s;
        (void)sector_of(adr, &s);
        r = stub_fail(F4LOAD_KIND_BAD_ARGUMENT, op, s.index, F4LOAD_ARG_ALIGNMENT, adr, 0u);
    }
    if (!r) {
        *value = crc_unit_words(adr, sz / 4u);
    }
    return r;
}

/* CRC of flash words by the CRC unit; the value goes to f4load_crc (see crc.c). */
F4LOAD_EXPORT uint32_t Crc(uint32_t adr, uint32_t sz)
{
    const uint32_t op = F4LOAD_OP_CRC;
    uint32_t value;
    uint32_t r = not_initialized(op);
    return r ? r : crc_range(op, adr, sz, &value);
}
