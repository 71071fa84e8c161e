import asyncio
import sys

from seed.cli import main

sys.exit(asyncio.run(main(sys.argv[1:])))
