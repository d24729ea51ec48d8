/*
 * Time in the stub: the DWT cycle counter, the BSY wait with its timeout, and keeping a running IWDG quiet.
 */
#include "stub.h"

/*
 * Erase timeouts in ms, [PSIZE][size class]: twice the DS8626 Table 40 maximum.
 * Classes: 16 KB sector, 64 KB sector, 128 KB sector, mass erase.
 * A table of plain numbers (no pointers), so it is reached PC-relative in the position-independent blob.
 */
static const uint32_t erase_timeouts[3][4] = {
    {1600u, 4800u, 8000u, 64000u},  /* x8:  800 ms, 2.4 s, 4 s, 32 s maximum */
    {1200u, 2800u, 5200u, 44000u},  /* x16: 600 ms, 1.4 s, 2.6 s, 22 s maximum */
    {1000u, 2200u, 4000u, 32000u},  /* x32: 500 ms, 1.1 s, 2 s, 16 s maximum */
};

uint32_t erase_timeout_ms(uint32_t size_class)
{
    return erase_timeouts[g_stub.psize][size_class];
}

/*
 * Start DWT CYCCNT (ARMv7-M C1.8: DEMCR.TRCENA powers the DWT, DWT_CTRL.CYCCNTENA starts the counter).
 * Returns non-zero if this core has no cycle counter or it does not move: then no wait could time out.
 */
int cycle_counter_start(void)
{
    DEMCR |= DEMCR_TRCENA;
    if (DWT_CTRL & DWT_CTRL_NOCYCCNT) {
        return 1;
    }
    DWT_CTRL |= DWT_CTRL_CYCCNTENA;
    uint32_t before = DWT_CYCCNT;
    for (uint32_t i = 0; i < 4u; i++) {
        if (DWT_CYCCNT != before) {
            return 0;
        }
    }
    return 1;
}

/* Refresh the IWDG (RM0090 19.3.2: writing 0xAAAA to KR reloads the counter). Harmless if it is not running. */
void watchdog_refresh(void)
{
    if (g_stub.iwdg) {
        IWDG_KR = IWDG_KEY_RELOAD;
    }
}

/* How long to wait for IWDG_SR.PVU|RVU to clear: "up to 5 RC 40 kHz cycles" (RM0090 19.4.4), with margin. */
#define IWDG_UPDATE_WAIT_MS  2u

/*
 * Wait (bounded) until the IWDG has taken its last PR/RLR write: PVU/RVU clear when the value has crossed into
 * the LSI domain. With the LSI off (IWDG never started) they may stay set, hence the bound. The counter is
 * reloaded while waiting, so a short application period does not run out meanwhile.
 */
static void iwdg_wait_update(void)
{
    uint32_t start = DWT_CYCCNT;
    uint32_t limit = IWDG_UPDATE_WAIT_MS * g_stub.cycles_per_ms;
    while ((IWDG_SR & (IWDG_SR_PVU | IWDG_SR_RVU)) && (DWT_CYCCNT - start) < limit) {
        IWDG_KR = IWDG_KEY_RELOAD;
    }
}

/*
 * Make a running IWDG as slow as it goes: prescaler /256, reload 0xFFF, about 32 s at LSI 32 kHz.
 * A hardware watchdog (option WDG_SW = 0) cannot be stopped, and DBGMCU freezes it only while the core is
 * halted, not while it runs the stub. Writing PR/RLR after KR = 0x5555 does not start a stopped IWDG
 * (RM0090 19.3.3). PR and RLR can be written only while PVU and RVU are 0 (RM0090 19.4.4, IWDG_SR): the
 * application may have written them just before the debugger halted it, so wait for an update still in
 * flight first, then write, then wait for ours to land.
 */
void watchdog_stretch(void)
{
    g_stub.iwdg = 1u;
    IWDG_KR = IWDG_KEY_RELOAD;  /* first buy the application's own period */
    iwdg_wait_update();
    IWDG_KR = IWDG_KEY_ACCESS;
    IWDG_PR = IWDG_PR_DIV256;
    IWDG_RLR = IWDG_RLR_MAX;
    iwdg_wait_update();
    IWDG_KR = IWDG_KEY_RELOAD;
}

/*
 * Wait until FLASH_SR.BSY clears or `timeout_ms` pass. Returns the last SR value read: BSY is still set in it
 * when the wait timed out. Time is counted in CYCCNT deltas folded into whole milliseconds, so the 32-bit
 * counter may wrap any number of times. The IWDG is refreshed once per millisecond.
 *
 * SR is polled back to back, with no delay loop in between: the core runs from SRAM, so reading a flash
 * interface register stalls nothing else, and the end of an operation is seen at once. (The virtual chip
 * also relies on it: it lets a core that polls BSY skip ahead to the end of the operation, docs/sim.md, but
 * a counting delay loop between polls would be emulated instruction by instruction.)
 */
uint32_t flash_wait_idle(uint32_t timeout_ms)
{
    uint32_t last = DWT_CYCCNT;
    uint32_t acc = 0u;
    uint32_t ms = 0u;
    uint32_t sr;
    watchdog_refresh();
    for (;;) {
        sr = FLASH_SR;
        if (!(sr & FLASH_SR_BSY)) {
            break;
        }
        uint32_t now = DWT_CYCCNT;
        acc += now - last;
        last = now;
        while (acc >= g_stub.cycles_per_ms) {
            acc -= g_stub.cycles_per_ms;
            ms++;
            watchdog_refresh();
        }
        if (ms >= timeout_ms) {
            break;
        }
    }
    g_stub.waited_ms = ms;
    return sr;
}
