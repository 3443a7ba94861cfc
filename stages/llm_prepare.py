"""DVC stage entry point: `clsuite llm-prepare` (all logic lives in clsuite/)."""

import sys
from pathlib import Path

# This checkout's clsuite first (also in DVC's temporary experiment workspaces, where an
# installed clsuite would point at another copy of the code).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clsuite.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["llm-prepare", *sys.argv[1:]]))
