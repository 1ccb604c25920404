"""``python -m bench``: see :mod:`bench.main`."""

import sys

from bench.main import main

sys.exit(main())
