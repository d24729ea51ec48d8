"""f4load: fast, truthful programming of STM32F405/407/415/417 over SWD."""

__version__ = "0.1.0"
