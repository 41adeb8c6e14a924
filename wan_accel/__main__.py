"""``python -m wan_accel``: the same command line as ``wan-accel``."""
import sys

from .cli import main

sys.exit(main())
