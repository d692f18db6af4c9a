"""``python -m ptycholib``."""

import sys

from ptycholib.cli import main

sys.exit(main())
