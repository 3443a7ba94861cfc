"""DVC stage entry point: `clsuite report` (all logic lives in clsuite/)."""

import sys

from clsuite.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
