"""DVC stage entry point: `clsuite prepare` (all logic lives in clsuite/)."""

import sys

from clsuite.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", *sys.argv[1:]]))
