"""pyocd user script: f4load's flash algorithm for STM32F405/407/415/417 without installing f4load's plugin.

    pyocd flash --script examples/pyocd_user.py -t f4load_stm32f407xg firmware.hex
    pyocd flash --script examples/pyocd_user.py -t f4load_stm32f405xe -e sector firmware.bin --base-address 0x08000000

pyocd runs this file when the session is created, before it looks up the target type (`-t`), so the
`f4load_*` target types exist by the time pyocd needs them. It works with any probe pyocd supports; with an
ST-Link the stub's parallelism follows the VDD the ST-Link measures (x32 when a probe reports nothing).

Target types: f4load_stm32f405xe, f4load_stm32f405xg, f4load_stm32f407xe, f4load_stm32f407xg,
f4load_stm32f415xe, f4load_stm32f415xg, f4load_stm32f417xe, f4load_stm32f417xg (xE 512 KB, xG 1 MB).
See docs/pyocd.md.

The f4load package must be importable: installed (`pip install -e .`), or next to this script in a clone
of the repository (then `host/` is put on sys.path below).
"""
import sys
from pathlib import Path

try:
    import f4load.pyocd_targets as f4load_targets
except ImportError:
    # A clone of the repository without installing: the package lives in ../host.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "host"))
    import f4load.pyocd_targets as f4load_targets

f4load_targets.register_targets()
