"""DVC stage entry point: `clsuite train` (all logic lives in clsuite/)."""

import sys

from clsuite.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
