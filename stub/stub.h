/*
 * Internal declarations of the f4load stub (not part of the host protocol; that is f4load_protocol.h).
 *
 * Position independence: the blob is compiled -fPIE and every declaration here is hidden, so code reaches
 * functions and data PC-relative (no GOT, no r9). See toolchain/README.md.
 */
#ifndef F4LOAD_STUB_H
#define F4LOAD_STUB_H

#include <stdint.h>

#include "f4_regs.h"
#include "f4load_protocol.h"

/* Symbols the host finds by name in the ELF keep default visibility. */
#define F4LOAD_EXPORT __attribute__((visibility("default"), used))

#pragma GCC visibility push(hidden)

/* Run-time state between entry-point calls (lives in PrgData; zero when the blob is loaded). */
struct stub_state {
    uint32_t initialized;    /* set by a successful Init, cleared by UnInit */
    uint32_t psize;          /* PSIZE_X8 .. PSIZE_X32, from the config word */
    uint32_t cycles_per_ms;  /* DWT CYCCNT ticks per millisecond */
    uint32_t flash_end;      /* one past the last byte of main flash (F_SIZE) */
    uint32_t acr_saved;      /* FLASH_ACR cache enable bits found at Init (valid with SAVED_CACHES) */
    uint32_t primask_saved;  /* PRIMASK found at Init (valid with SAVED_PRIMASK) */
    uint32_t saved;          /* SAVED_*: what Init saved and UnInit must restore */
    uint32_t iwdg;           /* non-zero: refresh the IWDG while waiting */
    uint32_t stale;          /* F4LOAD_STALE when the current operation found stale error flags */
    uint32_t waited_ms;      /* duration of the last flash_wait_idle() */
    uint32_t erased_start;   /* [erased_start, erased_end): known erased by this stub (flash_ops.c) */
    uint32_t erased_end;
};

extern struct stub_state g_stub;

/* stub_state.saved: set by the first Init, cleared by UnInit once restored. A second Init without UnInit
   keeps the first one's values (it would otherwise save its own masked PRIMASK and disabled caches). */
#define SAVED_CACHES         (1u << 0)
#define SAVED_PRIMASK        (1u << 1)

/* Sector geometry of an address in main flash (RM0090 Table 5). */
struct sector_info {
    uint32_t index;          /* 0..11 */
    uint32_t start;          /* address of its first byte */
    uint32_t size;           /* bytes */
    uint32_t size_class;     /* ERASE_CLASS_*: index into the timeout table */
};

/* Erase size classes: the columns of the timeout table (timing.c). */
#define ERASE_CLASS_16K      0u
#define ERASE_CLASS_64K      1u
#define ERASE_CLASS_128K     2u
#define ERASE_CLASS_MASS     3u
/* The longest single-sector erase: how long an operation started before us (by the application, or an
   earlier call that failed) may still keep BSY set. */
#define ERASE_CLASS_LONGEST_SECTOR  ERASE_CLASS_128K

/* Bytes read between two IWDG refreshes in Verify/BlankCheck (a power of two: the test is a mask). */
#define BYTES_PER_REFRESH    4096u

/* report.c: build a result code, fill the error record, return the code. */
uint32_t stub_fail(uint32_t kind, uint32_t op, uint32_t sector, uint32_t detail, uint32_t address,
                   uint32_t sr_bits);
uint32_t stub_fail_values(uint32_t kind, uint32_t op, uint32_t sector, uint32_t detail, uint32_t address,
                          uint32_t expected, uint32_t actual);
void stub_record_stale(uint32_t sr_bits);
void stub_record_reset(uint32_t flash_size);
void stub_record_cfsr(uint32_t cfsr);

/* timing.c: DWT cycle counter, IWDG keep-alive, the BSY wait. */
int cycle_counter_start(void);                 /* 0 when CYCCNT counts */
void watchdog_stretch(void);
void watchdog_refresh(void);
uint32_t flash_wait_idle(uint32_t timeout_ms);  /* returns the last FLASH_SR read */
uint32_t erase_timeout_ms(uint32_t size_class);                      /* size_class: ERASE_CLASS_* */

/* flash_ops.c: the RM0090 3.6 sequences. Each returns 0 or a result code. */
int sector_of(uint32_t address, struct sector_info *out);    /* 0 when address is in the 1 MB map */
uint32_t sector_index(uint32_t address);                      /* 0..11, or F4LOAD_SECTOR_NONE */
uint32_t flash_unlock(uint32_t op);
void flash_lock(void);
uint32_t flash_begin(uint32_t op, uint32_t sector, uint32_t address, uint32_t timeout_ms);
uint32_t flash_erase_sector(const struct sector_info *sector);
uint32_t flash_erase_chip(void);
uint32_t flash_program(uint32_t address, uint32_t size, const uint8_t *buf);
void flash_caches_off(void);
void flash_caches_restore(void);

/* entry.c: argument checks and operations shared by the CMSIS entry points and Stream. */
uint32_t not_initialized(uint32_t op);                        /* 0 after a successful Init */
uint32_t check_range(uint32_t op, uint32_t adr, uint32_t sz); /* 0 when [adr, adr+sz) is main flash */
uint32_t erase_sector_at(uint32_t op, uint32_t adr);
uint32_t crc_range(uint32_t op, uint32_t adr, uint32_t sz, uint32_t *value);

/* report.c: copy the error record (Stream hands it to the host in the queue). */
void stub_copy_error(volatile struct f4load_error *to);

/* crc.c */
void copy_blocks(uint32_t dst, uint32_t src, uint32_t blocks);  /* blocks of 8 words */
uint32_t crc_unit_words(uint32_t address, uint32_t words);   /* returns the CRC, also in f4load_crc */
uint32_t zlib_crc32(uint32_t address, uint32_t size);        /* zlib's crc32() of bytes at a word address */

#pragma GCC visibility pop

/* The entry points Run calls (exported: the host finds them by name). */
F4LOAD_EXPORT uint32_t Init(uint32_t adr, uint32_t clk, uint32_t fnc);
F4LOAD_EXPORT uint32_t UnInit(uint32_t fnc);
F4LOAD_EXPORT uint32_t Stream(uint32_t queue, uint32_t buffers, uint32_t count);

#endif /* F4LOAD_STUB_H */
