/*
 * The flash sequences of RM0090 3.6, each checked against FLASH_SR and reported precisely.
 *
 * Every operation: wait for BSY, clear (and remember) error flags left from before, set CR with ERRIE so that
 * OPERR is reported (RM0090 3.7.4: OPERR is only set when ERRIE = 1), start, wait for BSY with a timeout, read
 * SR. CR is never written while BSY may still be set: such a write stalls the bus until BSY clears (RM0090
 * 3.6), which with a stuck BSY would hang the stub instead of reporting.
 */
#include "stub.h"

/* Locate `address` in the 1 MB sector map (RM0090 Table 5). Returns non-zero outside main flash. */
int sector_of(uint32_t address, struct sector_info *out)
{
    if (address < FLASH_MEM_BASE || address - FLASH_MEM_BASE >= FLASH_MEM_MAX_SIZE) {
        return 1;
    }
    uint32_t offset = address - FLASH_MEM_BASE;
    if (offset < FLASH_SMALL_SECTORS_END) {
        out->index = offset >> FLASH_SMALL_SECTOR_SHIFT;
        out->start = FLASH_MEM_BASE + (out->index << FLASH_SMALL_SECTOR_SHIFT);
        out->size = 1u << FLASH_SMALL_SECTOR_SHIFT;
        out->size_class = ERASE_CLASS_16K;
    } else if (offset < FLASH_LARGE_SECTORS_START) {
        out->index = FLASH_MEDIUM_SECTOR;
        out->start = FLASH_MEM_BASE + FLASH_SMALL_SECTORS_END;
        out->size = FLASH_MEDIUM_SECTOR_SIZE;
        out->size_class = ERASE_CLASS_64K;
    } else {
        uint32_t large = offset >> FLASH_LARGE_SECTOR_SHIFT;  /* 1 for sector 5 */
        out->index = FLASH_MEDIUM_SECTOR + large;
        out->start = FLASH_MEM_BASE + (large << FLASH_LARGE_SECTOR_SHIFT);
        out->size = 1u << FLASH_LARGE_SECTOR_SHIFT;
        out->size_class = ERASE_CLASS_128K;
    }
    return 0;
}

/* The sector number of `address` for result codes: 0..11, or F4LOAD_SECTOR_NONE outside main flash. */
uint32_t sector_index(uint32_t address)
{
    struct sector_info s;
    return sector_of(address, &s) ? F4LOAD_SECTOR_NONE : s.index;
}

static uint32_t psize_bits(void)
{
    return g_stub.psize << FLASH_CR_PSIZE_SHIFT;
}

/*
 * Unlock FLASH_CR with the key sequence (RM0090 3.5.1). Keys are written only while LOCK is set: a key
 * written to an unlocked CR is itself a wrong sequence. A wrong key since reset (by the application) locks
 * CR until the next reset and makes further KEYR writes bus errors; so the writes run with FAULTMASK set and
 * CCR.BFHFNMIGN, which makes the core ignore a data bus fault (ARMv7-M B3.2.8) and leave it in CFSR, and with
 * ACTLR.DISDEFWBUF so that the fault is precise (Cortex-M4 TRM 4.3.2). Then LOCK still set says it all.
 */
uint32_t flash_unlock(uint32_t op)
{
    if (!(FLASH_CR & FLASH_CR_LOCK)) {
        return 0u;
    }
    uint32_t ccr = SCB_CCR;
    uint32_t actlr = SCB_ACTLR;
    SCB_CFSR = SCB_CFSR_BFSR_MASK;  /* write-1-to-clear any old BusFault status */
    SCB_ACTLR = actlr | SCB_ACTLR_DISDEFWBUF;
    SCB_CCR = ccr | SCB_CCR_BFHFNMIGN;
    __asm volatile("cpsid f\n\tdsb\n\tisb" ::: "memory");
    FLASH_KEYR = FLASH_KEY1;
    FLASH_KEYR = FLASH_KEY2;
    __asm volatile("dsb\n\tisb\n\tcpsie f" ::: "memory");
    SCB_CCR = ccr;
    SCB_ACTLR = actlr;
    if (FLASH_CR & FLASH_CR_LOCK) {
        stub_record_cfsr(SCB_CFSR);
        return stub_fail(F4LOAD_KIND_LOCKED, op, F4LOAD_SECTOR_NONE, 0u, (uint32_t)&FLASH_KEYR, 0u);
    }
    return 0u;
}

/* Set LOCK. The caller has made sure BSY is clear (a CR write would stall otherwise). */
void flash_lock(void)
{
    FLASH_CR = FLASH_CR_LOCK;
}

/*
 * Before an operation: unlock if needed, wait for BSY (something may still be running), then clear error
 * flags that are already set. They are sticky (RM0090 3.7.4) and would make the next operation fail for an
 * old reason; they are recorded in the error record and marked F4LOAD_STALE in a later failure code.
 */
uint32_t flash_begin(uint32_t op, uint32_t sector, uint32_t address, uint32_t timeout_ms)
{
    g_stub.stale = 0u;
    uint32_t sr = flash_wait_idle(timeout_ms);
    if (sr & FLASH_SR_BSY) {
        return stub_fail(F4LOAD_KIND_BSY_TIMEOUT, op, sector, 0u, address, sr);
    }
    uint32_t stale = sr & FLASH_SR_ERRORS;
    if (stale) {
        FLASH_SR = stale;
        stub_record_stale(stale);
        g_stub.stale = F4LOAD_STALE;
    }
    return flash_unlock(op);
}

/*
 * After an operation: BSY still set means the timeout passed; error bits mean the flash interface refused or
 * failed. The error bits are reported, then cleared so that they do not poison the next operation.
 */
static uint32_t flash_end(uint32_t op, uint32_t sector, uint32_t address, uint32_t sr)
{
    if (sr & FLASH_SR_BSY) {
        return stub_fail(F4LOAD_KIND_BSY_TIMEOUT, op, sector, 0u, address, sr);
    }
    if (sr & FLASH_SR_ERRORS) {
        uint32_t code = stub_fail(F4LOAD_KIND_FLASH_ERROR, op, sector, 0u, address, sr);
        FLASH_SR = sr & FLASH_SR_ERRORS;
        return code;
    }
    return 0u;
}

/* Sector erase, RM0090 3.6.3: CR = SER | SNB | PSIZE, then STRT. */
uint32_t flash_erase_sector(const struct sector_info *sector)
{
    uint32_t timeout = erase_timeout_ms(sector->size_class);
    uint32_t r = flash_begin(F4LOAD_OP_ERASE_SECTOR, sector->index, sector->start, timeout);
    if (r) {
        return r;
    }
    FLASH_CR = FLASH_CR_SER | ((sector->index << FLASH_CR_SNB_SHIFT) & FLASH_CR_SNB_MASK) | psize_bits() |
               FLASH_CR_ERRIE;
    FLASH_CR |= FLASH_CR_STRT;
    uint32_t sr = flash_wait_idle(timeout);
    if (!(sr & FLASH_SR_BSY)) {
        FLASH_CR = FLASH_CR_ERRIE;
    }
    return flash_end(F4LOAD_OP_ERASE_SECTOR, sector->index, sector->start, sr);
}

/* Mass erase, RM0090 3.6.3: CR = MER | PSIZE, then STRT. Refused (WRPERR) if any sector is protected. */
uint32_t flash_erase_chip(void)
{
    uint32_t timeout = erase_timeout_ms(ERASE_CLASS_MASS);
    uint32_t r = flash_begin(F4LOAD_OP_ERASE_CHIP, F4LOAD_SECTOR_NONE, FLASH_MEM_BASE, timeout);
    if (r) {
        return r;
    }
    FLASH_CR = FLASH_CR_MER | psize_bits() | FLASH_CR_ERRIE;
    FLASH_CR |= FLASH_CR_STRT;
    uint32_t sr = flash_wait_idle(timeout);
    if (!(sr & FLASH_SR_BSY)) {
        FLASH_CR = FLASH_CR_ERRIE;
    }
    return flash_end(F4LOAD_OP_ERASE_CHIP, F4LOAD_SECTOR_NONE, FLASH_MEM_BASE, sr);
}

/* A flash access of exactly the PSIZE width: a store of another width sets PGPERR (RM0090 3.7.4). */
static uint32_t flash_read(uint32_t address)
{
    switch (g_stub.psize) {
    case PSIZE_X8:
        return MMIO8(address);
    case PSIZE_X16:
        return MMIO16(address);
    default:
        return MMIO32(address);
    }
}

/*
 * Complete a store to flash before FLASH_SR is read. Flash is Normal memory and the FLASH registers are Device
 * memory (ARMv7-M A3.7.3): the core does not order a Normal store before a later Device load, and the store
 * may still sit in the write buffer when SR is read. SR would then show BSY clear (the write has not reached
 * the flash interface yet) and the read-back would race the programming. DSB waits until the store is done.
 */
static inline void flash_store_barrier(void)
{
    __asm volatile("dsb" ::: "memory");
}

static void flash_store(uint32_t address, uint32_t value)
{
    switch (g_stub.psize) {
    case PSIZE_X8:
        MMIO8(address) = (uint8_t)value;
        break;
    case PSIZE_X16:
        MMIO16(address) = (uint16_t)value;
        break;
    default:
        MMIO32(address) = value;
        break;
    }
    flash_store_barrier();
}

/*
 * Programming only clears bits (digest: program only erased locations). A unit whose data needs a 1 where the
 * flash holds a 0 cannot be programmed; it is refused before the write, so the flash keeps what it held (the
 * evidence: a write would leave old & new there). Reports VERIFY_MISMATCH / NOT_ERASED.
 */
static uint32_t refuse_not_erased(uint32_t address, uint32_t value, uint32_t old)
{
    FLASH_CR = FLASH_CR_ERRIE;
    return stub_fail_values(F4LOAD_KIND_VERIFY_MISMATCH, F4LOAD_OP_PROGRAM, sector_index(address),
                            F4LOAD_VERIFY_NOT_ERASED, address, value, old);
}

/* Words between two IWDG refreshes in the x32 program loop: 64 x 16 us = about 1 ms (DS8626 Table 40). */
#define WORDS_PER_REFRESH  64u

/*
 * The x32 program loop (PSIZE = x32, address, size and buffer word-aligned): the one the stream spends its
 * time in, so it is written for the instruction count. One flash write takes 16 us (DS8626 Table 40); every
 * instruction around it is time the flash sits idle. Per word: load the data and the old contents, refuse a
 * word that is not erased where the data has a 1, skip one that already holds the data, store, DSB (see
 * flash_store_barrier), poll BSY (no function call, no timer read: a poll budget
 * of cycles_per_ms / 4 polls of at least 4 cycles each is at least the 1 ms timeout, and only when it runs
 * out does the precise, timed wait take over), then read back. The IWDG is refreshed every 64 words.
 */
static uint32_t program_words(uint32_t address, uint32_t size, const uint32_t *src)
{
    const uint32_t op = F4LOAD_OP_PROGRAM;
    const uint32_t poll_budget = g_stub.cycles_per_ms / 4u + 1u;
    volatile uint32_t *dst = (volatile uint32_t *)address;
    volatile uint32_t *const end = dst + size / 4u;
    while (dst < end) {
        volatile uint32_t *chunk_end = (uint32_t)(end - dst) > WORDS_PER_REFRESH ? dst + WORDS_PER_REFRESH : end;
        watchdog_refresh();
        do {
            uint32_t value = *src++;
            volatile uint32_t *at = dst++;
            uint32_t old = *at;
            if (value & ~old) {
                return refuse_not_erased((uint32_t)at, value, old);
            }
            if (old != value) {
                *at = value;
                flash_store_barrier();
                uint32_t polls = poll_budget;
                uint32_t sr;
                while ((sr = FLASH_SR) & FLASH_SR_BSY) {
                    if (--polls == 0u) {
                        sr = flash_wait_idle(F4LOAD_PROGRAM_TIMEOUT_MS);
                        if (sr & FLASH_SR_BSY) {
                            return flash_end(op, sector_index((uint32_t)at), (uint32_t)at, sr);
                        }
                        break;
                    }
                }
                if (sr & FLASH_SR_ERRORS) {
                    return flash_end(op, sector_index((uint32_t)at), (uint32_t)at, sr);
                }
            }
            uint32_t now = *at;
            if (now != value) {
                FLASH_CR = FLASH_CR_ERRIE;
                return stub_fail_values(F4LOAD_KIND_VERIFY_MISMATCH, op, sector_index((uint32_t)at),
                                        F4LOAD_VERIFY_AFTER_WRITE, (uint32_t)at, value, now);
            }
        } while (dst < chunk_end);
    }
    return 0u;
}

/*
 * Any width and alignment: units of the PSIZE width, aligned to their width, so none crosses a 16-byte row
 * (PGAERR). The bytes of a unit outside the range take their current value (read back): programming only
 * clears bits, so writing a byte's own value changes nothing, and nothing outside the range changes.
 */
static uint32_t program_units(uint32_t address, uint32_t size, const uint8_t *buf)
{
    const uint32_t op = F4LOAD_OP_PROGRAM;
    const uint32_t width = 1u << g_stub.psize;
    const uint32_t mask = width == 4u ? 0xFFFFFFFFu : (1u << (8u * width)) - 1u;
    const uint32_t end = address + size;
    uint32_t unit = address & ~(width - 1u);
    while (unit < end) {
        uint32_t old = flash_read(unit);
        uint32_t value = 0u;
        for (uint32_t i = 0u; i < width; i++) {
            uint32_t a = unit + i;
            uint32_t byte = (a >= address && a < end) ? buf[a - address] : (old >> (8u * i)) & 0xFFu;
            value |= byte << (8u * i);
        }
        if (value & ~old & mask) {
            return refuse_not_erased(unit, value, old);
        }
        if (old != value) {
            flash_store(unit, value);
            uint32_t sr = flash_wait_idle(F4LOAD_PROGRAM_TIMEOUT_MS);
            uint32_t r = flash_end(op, sector_index(unit), unit, sr);
            if (r) {
                return r;
            }
        }
        uint32_t now = flash_read(unit);
        if (now != value) {
            FLASH_CR = FLASH_CR_ERRIE;
            return stub_fail_values(F4LOAD_KIND_VERIFY_MISMATCH, op, sector_index(unit),
                                    F4LOAD_VERIFY_AFTER_WRITE, unit, value, now);
        }
        unit += width;
    }
    return 0u;
}

/*
 * Program [address, address + size) from buf, RM0090 3.6.4: CR = PG | PSIZE, then one store of the PSIZE width
 * per unit, each followed by a BSY wait. A unit that already holds its data is skipped (an 0xFF tail costs
 * nothing); a unit that is not erased where the data needs a 1 is refused before it is written, so the flash
 * is not left holding old & new; every written unit is read back. Word-aligned x32 requests take the tight
 * loop, everything else the general one; both give the same results.
 */
uint32_t flash_program(uint32_t address, uint32_t size, const uint8_t *buf)
{
    const uint32_t op = F4LOAD_OP_PROGRAM;
    uint32_t r = flash_begin(op, sector_index(address), address, erase_timeout_ms(ERASE_CLASS_LONGEST_SECTOR));
    if (r) {
        return r;
    }
    FLASH_CR = FLASH_CR_PG | psize_bits() | FLASH_CR_ERRIE;
    if (g_stub.psize == PSIZE_X32 && ((address | size | (uint32_t)buf) & 3u) == 0u) {
        r = program_words(address, size, (const uint32_t *)(const void *)buf);
    } else {
        r = program_units(address, size, buf);
    }
    if (r) {
        return r;
    }
    FLASH_CR = FLASH_CR_ERRIE;
    return 0u;
}

/*
 * The flash caches could hand back data from before an erase or program. The data cache may only be reset
 * while it is disabled (RM0090 3.5.4), so Init turns both caches off (the stub runs from RAM and reads flash
 * rarely) and UnInit resets them and restores what the application had.
 */
void flash_caches_off(void)
{
    uint32_t acr = FLASH_ACR;
    if (!(g_stub.saved & SAVED_CACHES)) {
        g_stub.acr_saved = acr & (FLASH_ACR_ICEN | FLASH_ACR_DCEN);
        g_stub.saved |= SAVED_CACHES;
    }
    FLASH_ACR = acr & ~(FLASH_ACR_ICEN | FLASH_ACR_DCEN);
}

void flash_caches_restore(void)
{
    uint32_t acr = FLASH_ACR & ~(FLASH_ACR_ICEN | FLASH_ACR_DCEN);
    FLASH_ACR = acr | FLASH_ACR_ICRST | FLASH_ACR_DCRST;
    FLASH_ACR = acr;
    FLASH_ACR = acr | g_stub.acr_saved;
}
