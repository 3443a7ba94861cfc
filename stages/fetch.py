"""DVC stage entry point: `clsuite fetch` (all logic lives in clsuite/)."""

import sys

from clsuite.cli import main

if __name__ == "__main__":
    sys.exit(main(["fetch", *sys.argv[1:]]))
