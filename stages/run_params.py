"""DVC stage entry point: write data/run_params/<method>.json, the params each image train
stage depends on (clsuite/dvc_params.py), so that DVC parses params.yaml once for them all
instead of once per train stage. A file is rewritten only when it changed."""

import sys
from pathlib import Path

# This checkout's clsuite first (also in DVC's temporary experiment workspaces).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clsuite.core.errors import ParamsError  # noqa: E402
from clsuite.dvc_params import RUN_PARAMS_DIR, write_run_params  # noqa: E402

if __name__ == "__main__":
    try:
        changed = write_run_params(Path("params.yaml"), Path(RUN_PARAMS_DIR))
    except ParamsError as exc:
        sys.exit(f"error: {exc}")
    print(f"run params rewritten: {', '.join(changed)}" if changed else "run params unchanged")
