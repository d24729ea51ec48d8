"""The exit status of every f4load command, one number per class of outcome (docs/cli.md).

A production line gates on these: 0 is the only success, and each failure class has its own number so a
script can tell "the flash refused" from "no probe" from "the board reset mid-erase". Kept in a module of its
own, with no imports, so that `f4load --help` can show them without loading pyocd.
"""
from __future__ import annotations

OK = 0
FLASH = 1            # a flash operation failed, or protection forbids it
USAGE = 2            # bad command line, bad input file, a request the target cannot satisfy
PROBE = 3            # no probe / several probes / cannot connect / not an STM32F405/407/415/417
LINK = 4             # the target reset or the probe lost it in the middle of the work
VERIFY = 5           # the flash does not hold what it should
DIAGNOSE_PROBLEM = 6   # `diagnose` found a problem (its verdict is "problem")
DIAGNOSE_WARNING = 7   # `diagnose` found only warnings
DECLINED = 8         # the user answered no at a prompt: nothing was done
BOARDS_FAILED = 9    # several boards, failing for different reasons (each board's own status is in the report)
INTERRUPTED = 130    # Ctrl-C or SIGTERM (128 + SIGINT, the shell convention)

# `diagnose`'s exit status for its verdict (f4load.diagnose: ok / warning / problem).
DIAGNOSE = {"ok": OK, "warning": DIAGNOSE_WARNING, "problem": DIAGNOSE_PROBLEM}

HELP = """\b
Exit status:
  0    success
  1    a flash operation failed (the stub's error names the sector and the
       FLASH_SR bits), or read-out/write protection forbids it
  2    usage error or bad input file (nothing was erased)
  3    no probe, several probes and none chosen, cannot connect, or the
       target is not an STM32F405/407/415/417
  4    the target reset or the probe lost it in the middle of the work
  5    verify mismatch: the flash does not hold what was written
  6    diagnose: a problem was found (the verdict says which)
  7    diagnose: warnings only
  8    declined at a prompt: nothing was done
  9    several boards failed with different statuses (see each board's)
  130  interrupted (Ctrl-C, SIGTERM): stopped at a safe point, FLASH_CR locked
With several boards (--probe given more than once, or --probe all) the
status is 0 when every board succeeded, else the failed boards' common
status, else 9.
"""
