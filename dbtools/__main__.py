"""``python -m dbtools``: the same as the ``dbtools`` console script."""

from __future__ import annotations

import sys

from dbtools.cli import main

sys.exit(main())
