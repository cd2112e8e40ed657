"""``python -m kafkite ...``: the ``kafkite`` command."""

import sys

from kafkite.cli import main

sys.exit(main())
