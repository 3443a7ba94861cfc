"""DVC stage entry point: `clsuite evaluate` (all logic lives in clsuite/)."""

import sys

from clsuite.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
