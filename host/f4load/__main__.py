"""`python -m f4load`: the command line (f4load.cli), with Ctrl-C handled from the first instruction.

The signal handlers go in before the rest of f4load (pyocd, Unicorn) is imported, so that a Ctrl-C during the
imports is one line and exit status 130 like any other (f4load.interrupt).
"""
from __future__ import annotations

import sys

from f4load import interrupt


def main() -> int:
    interrupt.install()
    try:
        from f4load.cli import main as cli_main
    except KeyboardInterrupt as exc:
        text = str(exc) if isinstance(exc, interrupt.Interrupted) else "interrupted"
        sys.stderr.write(f"f4load: error: {text}: nothing was done\n")
        return interrupt.EXIT_STATUS
    try:
        return cli_main()
    except KeyboardInterrupt as exc:  # after the command's own handling, while the process ends
        sys.stderr.write(f"f4load: error: {exc if isinstance(exc, interrupt.Interrupted) else 'interrupted'}\n")
        return interrupt.EXIT_STATUS


if __name__ == "__main__":
    sys.exit(main())
