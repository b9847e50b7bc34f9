"""``python -m llmos`` (and ``torchrun -m llmos``) runs the CLI."""

import sys

from llmos.cli import main

sys.exit(main())
