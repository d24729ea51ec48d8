"""The virtual STM32F407 that f4load tests and demonstrates against (docs/sim.md).

`chip.Chip` is the chip; `debug.DebugPort` its SW-DP; `probe.SimProbe` the pyocd probe plugin that drives it.
Modules import their dependencies directly; this package imports nothing, so `pyocd` loading the probe
plugin stays cheap.
"""
