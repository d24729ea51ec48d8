"""`python -m f4load`: the f4load command line (f4load.cli)."""
import sys

from f4load.cli import main

sys.exit(main())
