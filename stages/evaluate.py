"""DVC stage entry point: `clsuite evaluate` (all logic lives in clsuite/)."""

import sys
from pathlib import Path

# This checkout's clsuite first (also in DVC's temporary experiment workspaces, where an
# installed clsuite would point at another copy of the code).
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from clsuite.core.warm import run_stage  # noqa: E402  (standard library only)

if __name__ == "__main__":
    run_stage(["evaluate", *sys.argv[1:]], ROOT, warm=False)
