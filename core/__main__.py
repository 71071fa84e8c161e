"""`python -m core upgrade | check | status`: see `core.cli`."""

import asyncio
import sys

from core.cli import main

sys.exit(asyncio.run(main(sys.argv[1:])))
