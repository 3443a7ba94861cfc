"""DVC stage entry point: write data/method_packages.json, the installed packages that extend
clsuite through entry points (methods, models, sources, ...) with their versions and source
hashes. It runs on every `dvc repro` (always_changed) but only imports nothing heavy and
rewrites the file byte for byte when nothing changed, so the train stages, which depend on
it, rerun only when a plugin package changed (clsuite/core/code_fingerprint.py)."""

import json
import sys
from pathlib import Path

# This checkout's clsuite first (also in DVC's temporary experiment workspaces).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from clsuite.core.code_fingerprint import plugin_packages  # noqa: E402

OUT = Path("data/method_packages.json")

if __name__ == "__main__":
    text = json.dumps(plugin_packages(), indent=2, sort_keys=True) + "\n"
    if not OUT.exists() or OUT.read_text() != text:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        tmp = OUT.with_suffix(".json.tmp")
        tmp.write_text(text)
        tmp.replace(OUT)
