/*
 * The CMSIS-Pack FlashDevice descriptor (section DevDscr), read by pyocd's PackFlashInfo and by Keil-style
 * tools: struct layout "<H128sHLLLLBxxxLL" (160 bytes), then {size, offset} pairs ended by 0xFFFFFFFF twice.
 * It describes the 1 MB map; on a 512 KB part the stub refuses sectors past F_SIZE at run time (BEYOND_END).
 */
#include "stub.h"

#define FLASH_DRV_VERS   0x0101u          /* CMSIS FlashOS.h: driver version 1.01 */
#define DEVTYPE_ONCHIP   1u
#define PAGE_SIZE        0x4000u          /* pyocd's ProgramPage unit: 16 KB, the smallest sector */
#define EMPTY_VALUE      0xFFu
#define PROG_TIMEOUT_MS  4000u            /* one 16 KB page at x8: 16384 writes x 100 us max, x2, rounded up */
#define ERASE_TIMEOUT_MS 8000u            /* 128 KB sector at x8: 4 s max, x2 */
#define SECTOR_END       0xFFFFFFFFu

struct flash_sector {
    uint32_t size;
    uint32_t offset;
};

struct flash_device {
    uint16_t version;
    char name[128];
    uint16_t type;
    uint32_t start;
    uint32_t size;
    uint32_t page_size;
    uint32_t reserved;
    uint8_t empty;
    uint8_t pad[3];
    uint32_t program_timeout_ms;
    uint32_t erase_timeout_ms;
    struct flash_sector sectors[4];
};

_Static_assert(sizeof(struct flash_device) == 160u + 4u * 8u, "FlashDevice layout is <H128sHLLLLBxxxLL + pairs");

F4LOAD_EXPORT const struct flash_device FlashDevice __attribute__((section("DevDscr"))) = {
    .version = FLASH_DRV_VERS,
    .name = "STM32F405/407/415/417 1 MB flash (f4load)",
    .type = DEVTYPE_ONCHIP,
    .start = FLASH_MEM_BASE,
    .size = FLASH_MEM_MAX_SIZE,
    .page_size = PAGE_SIZE,
    .reserved = 0u,
    .empty = EMPTY_VALUE,
    .pad = {0u, 0u, 0u},
    .program_timeout_ms = PROG_TIMEOUT_MS,
    .erase_timeout_ms = ERASE_TIMEOUT_MS,
    .sectors = {
        {1u << FLASH_SMALL_SECTOR_SHIFT, 0u},                          /* sectors 0-3: 16 KB */
        {FLASH_MEDIUM_SECTOR_SIZE, FLASH_SMALL_SECTORS_END},           /* sector 4: 64 KB */
        {1u << FLASH_LARGE_SECTOR_SHIFT, FLASH_LARGE_SECTORS_START},   /* sectors 5-11: 128 KB */
        {SECTOR_END, SECTOR_END},
    },
};
