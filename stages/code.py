"""DVC stage entry point: write data/code/<stage>.json, the clsuite source files each stage's
command can run with their sha256 (clsuite/dvc_deps.py). Every other stage depends on its own
list rather than on the files, so a code change reruns exactly the stages that run the changed
file, and dvc.lock stays short. A list is rewritten only when it changed."""

import sys
from pathlib import Path

# This checkout's clsuite first (also in DVC's temporary experiment workspaces).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clsuite.dvc_deps import CODE_LISTS, write_code_lists  # noqa: E402

if __name__ == "__main__":
    changed = write_code_lists(Path(CODE_LISTS))
    print(f"code lists rewritten: {', '.join(changed)}" if changed else "code lists unchanged")
