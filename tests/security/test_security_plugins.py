"""Issue #16, class 4: one third-party plugin cannot break or silently disable the others.

Each case installs a fake distribution (a ``*.dist-info`` folder with ``METADATA`` and
``entry_points.txt`` plus its module, on a temporary ``sys.path`` entry; nothing is pip
installed) whose ``clsuite.methods`` entry point is broken in one way. Built-in methods
must keep working, the broken one must be listed with its package and error, and looking
it up or running it must fail loudly (exit 2), never exit 0 without outputs.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import clsuite.image.train
from clsuite.cli import main
from clsuite.core.errors import RegistryError
from clsuite.methods import METHODS
from clsuite.config import read_params_raw

REPO = Path(__file__).resolve().parents[2]
BUILTINS = ["ewc", "finetune", "joint", "replay"]

#: name -> (distribution, entry-point name, module source, fragment of the recorded error)
CASES = {
    "import-error": ("clsuite-tp-needs-tf", "tfmethod",
                     "raise ImportError(\"No module named 'tensorflow'\")\n", "tensorflow"),
    "runtime-error": ("clsuite-tp-boom", "boommethod", "raise RuntimeError('boom at import')\n", "boom at import"),
    "sys-exit-0": ("clsuite-tp-exits", "exitmethod", "import sys\nsys.exit(0)\n", "sys.exit(0)"),
    "reregisters-replay": ("clsuite-tp-evil", "evilreplay", """
        from clsuite.methods import register_method
        from clsuite.methods.replay import ReplayConfig

        @register_method("replay", ReplayConfig, "an impostor")
        def build(cfg, ctx):
            return []
        """, "'replay' is registered twice"),
    "registers-nothing": ("clsuite-tp-silent", "silentmethod", "X = 1\n", "did not register a method"),
}


def _module(ep_name: str) -> str:
    return f"clsuite_tp_{ep_name}"


def install_fake_dist(site: Path, dist: str, version: str, eps: dict[str, str], modules: dict[str, str]) -> None:
    """Write an installed-looking distribution into ``site`` (which is on sys.path)."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[clsuite.methods]\n" + "".join(f"{name} = {value}\n" for name, value in eps.items()))
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    importlib.invalidate_caches()


def install_case(site: Path, case: str) -> tuple[str, str, str]:
    dist, ep_name, source, fragment = CASES[case]
    install_fake_dist(site, dist, "1.2.3", {ep_name: _module(ep_name)}, {_module(ep_name): source})
    return dist, ep_name, fragment


@pytest.fixture
def site(tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    for case in CASES.values():
        sys.modules.pop(_module(case[1]), None)


@pytest.fixture
def fresh_methods(monkeypatch):
    """The real METHODS registry reset to its built-ins, so the next query scans entry points again."""
    METHODS.names()
    builtin = {n: e for n, e in METHODS._entries.items() if METHODS._origin[n].startswith("clsuite.")}
    monkeypatch.setattr(METHODS, "_entries", builtin)
    monkeypatch.setattr(METHODS, "_origin", {n: METHODS._origin[n] for n in builtin})
    monkeypatch.setattr(METHODS, "_broken", [], raising=False)
    monkeypatch.setattr(METHODS, "_loaded", False)
    monkeypatch.setattr(METHODS, "_load_error", None)
    for mod in [m for m in sys.modules if m.split(".")[0] == "clsuite_er_ace"]:
        monkeypatch.delitem(sys.modules, mod)  # installed example plugin: imported again, restored after
    return builtin


def params_with(tmp_path: Path, method: str) -> Path:
    """params.yaml of the repository with ``method`` defined (so a run of it resolves it)."""
    raw = read_params_raw(REPO / "params.yaml")
    raw["methods"][method] = {}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_broken_plugin_is_listed_and_builtins_keep_working(case, site, fresh_methods, capsys):
    dist, ep_name, fragment = install_case(site, case)
    original_replay = fresh_methods["replay"]

    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("broken plugins")[0].splitlines() if line.strip()]
    assert set(BUILTINS) <= set(listed) and ep_name not in listed
    broken = out.split("broken plugins", 1)[1]
    assert ep_name in broken and f"{dist} 1.2.3" in broken and fragment in broken

    assert METHODS.get("replay") is original_replay  # built-ins win
    assert ep_name not in METHODS
    with pytest.raises(RegistryError) as info:
        METHODS.get(ep_name)
    msg = str(info.value)
    assert f"{dist} 1.2.3" in msg and fragment in msg and "uninstall" in msg


@pytest.mark.parametrize("case", list(CASES))
def test_runs_of_builtins_proceed_and_a_run_of_the_broken_method_fails_loudly(case, site, fresh_methods, tmp_path,
                                                                              monkeypatch, capsys):
    dist, ep_name, fragment = install_case(site, case)
    calls = []
    monkeypatch.setattr(clsuite.image.train, "train_run", lambda params, b, m, s: calls.append((b, m, s)) or tmp_path)
    params = params_with(tmp_path, ep_name)

    # params.yaml loads (every method resolved) and the built-in's run starts
    assert main(["--params", str(REPO / "params.yaml"), "train", "--benchmark", "smnist", "--method", "replay",
                 "--seed", "0"]) == 0
    assert calls == [("smnist", "replay", 0)]

    # a run whose params use the broken method: exit 2 naming the package and its error
    capsys.readouterr()
    assert main(["--params", str(params), "train", "--benchmark", "smnist", "--method", ep_name, "--seed", "0"]) == 2
    err = capsys.readouterr().err
    assert f"methods.{ep_name}" in err and f"{dist} 1.2.3" in err and fragment in err
    assert "Traceback" not in err
    assert calls == [("smnist", "replay", 0)]


def test_plugin_claiming_a_builtin_entry_point_name_is_refused_unimported(site, fresh_methods):
    install_fake_dist(site, "clsuite-tp-shadow", "0.1", {"replay": "clsuite_tp_shadow:SPEC"},
                      {"clsuite_tp_shadow": "raise RuntimeError('must not be imported')\n"})
    assert METHODS.get("replay") is fresh_methods["replay"]
    assert "clsuite_tp_shadow" not in sys.modules
    broken = [b for b in METHODS.broken() if b.name == "replay"]
    assert broken and broken[0].package == "clsuite-tp-shadow 0.1" and "built-in" in broken[0].error


def test_sys_exit_inside_a_command_is_exit_2_not_0(monkeypatch, tmp_path, capsys):
    """Defence in depth: whatever calls sys.exit(0) during a stage, the stage does not report success."""
    def exits(*args, **kwargs):
        sys.exit(0)

    monkeypatch.setattr(clsuite.image.train, "train_run", exits)
    assert main(["--params", str(REPO / "params.yaml"), "train", "--benchmark", "smnist", "--method", "finetune",
                 "--seed", "0"]) == 2
    err = capsys.readouterr().err
    assert "sys.exit(0)" in err and "outputs were not written" in err


def test_cli_process_with_every_broken_plugin_installed(site):
    """End to end in a fresh interpreter: `clsuite list methods` exits 0, lists the built-ins
    and every broken plugin, and prints no traceback."""
    for case in CASES:
        install_case(site, case)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    proc = subprocess.run([sys.executable, "-m", "clsuite.cli", "list", "methods"], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    listed, broken = proc.stdout.split("broken plugins", 1)
    assert set(BUILTINS) <= {line.split()[0] for line in listed.splitlines() if line.strip()}
    for dist, ep_name, _, fragment in CASES.values():
        assert ep_name in broken and f"{dist} 1.2.3" in broken and fragment in broken
    assert "Traceback" not in proc.stderr
