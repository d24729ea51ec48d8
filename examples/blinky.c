/* A minimal STM32F407 application used by `invoke demo`: toggles PD12 (the green LED of the STM32F4-Discovery)
 * from a busy loop. Only the vector table and the reset handler are needed. */
#include <stdint.h>

#define RCC_AHB1ENR (*(volatile uint32_t *)0x40023830u)
#define GPIOD_MODER (*(volatile uint32_t *)0x40020C00u)
#define GPIOD_ODR   (*(volatile uint32_t *)0x40020C14u)

extern uint32_t _stack_top;
void reset_handler(void);

__attribute__((section(".vectors"), used))
static const uint32_t vectors[2] = { (uint32_t)&_stack_top, (uint32_t)&reset_handler };

static const char banner[] = "f4load demo: blinky for the STM32F4-Discovery (PD12)";

void reset_handler(void)
{
    RCC_AHB1ENR |= 1u << 3;                 /* GPIOD clock */
    GPIOD_MODER = (GPIOD_MODER & ~(3u << 24)) | (1u << 24);
    for (;;) {
        GPIOD_ODR ^= 1u << 12;
        for (volatile uint32_t i = 0; i < 400000u + (uint32_t)banner[0]; i++) {
        }
    }
}
