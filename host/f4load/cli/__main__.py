"""`python -m f4load.cli`: the same as `python -m f4load`."""
import sys

from f4load.__main__ import main

sys.exit(main())
