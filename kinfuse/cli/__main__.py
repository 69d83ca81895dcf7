"""`python -m kinfuse.cli ...`, the same as the `kinfuse` command."""

import sys

from . import main

sys.exit(main())
