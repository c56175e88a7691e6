"""``python -m hapack.lab ...`` is ``hapack lab ...``."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
