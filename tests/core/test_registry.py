"""Registry: built-ins, name clashes, third-party entry points, and runtime-registered methods."""

from __future__ import annotations

import importlib
import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest
from pydantic import Field

import clsuite.core.registry
from clsuite.config import parse_params
from clsuite.core.errors import ParamsError, RegistryError
from clsuite.methods import METHODS, MethodConfig, MethodSpec, register_method
from clsuite.methods.replay import ReplayConfig
from clsuite.core.registry import Registry

GROUP = "clsuite.test_group"
BUILTINS = ["ewc", "finetune", "joint", "replay"]


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path for throw-away plugin modules; they are unimported afterwards."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    written: list[str] = []

    def write(module: str, source: str) -> str:
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
        written.append(module)
        importlib.invalidate_caches()
        return module

    yield write
    for module in written:
        sys.modules.pop(module, None)


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Make ``clsuite.core.registry.entry_points`` return the given (name, value) pairs for GROUP."""

    def install(*pairs: tuple[str, str], group: str = GROUP) -> list[EntryPoint]:
        eps = [EntryPoint(name=name, value=value, group=group) for name, value in pairs]

        def entry_points(*, group: str):
            return [ep for ep in eps if ep.group == group]

        monkeypatch.setattr(clsuite.core.registry, "entry_points", entry_points)
        return eps

    return install


@pytest.fixture
def holder(plugin_dir):
    """A module through which self-registering plugin modules find the registry under test."""
    plugin_dir("clsuite_tp_holder", "REGISTRY = None\n")
    return importlib.import_module("clsuite_tp_holder")


@pytest.fixture
def isolated_methods(monkeypatch):
    """Runtime registrations into METHODS are undone when the test ends."""
    METHODS.names()  # load built-ins and installed plugins into the real dicts first
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    monkeypatch.setattr(METHODS, "_origin", dict(METHODS._origin))
    return METHODS


def params_dict(methods: dict, run_methods: list[str]) -> dict:
    return {
        "run": {"benchmarks": ["tiny"], "methods": run_methods, "seeds": [0]},
        "benchmarks": {
            "tiny": {"source": "mnist5k", "model": {"name": "mlp", "hidden_sizes": [10]}},
        },
        "methods": methods,
    }


# -- built-ins, lookups, clashes ------------------------------------------------------------------


def test_builtin_methods_are_listed():
    names = METHODS.names()
    assert set(BUILTINS) <= set(names)
    assert names == sorted(names) and list(METHODS) == names
    for name in BUILTINS:
        assert name in METHODS
        spec = METHODS.get(name)
        assert isinstance(spec, MethodSpec) and spec.name == name
        assert issubclass(spec.config_cls, MethodConfig) and spec.description
        assert METHODS.origin(name) == f"clsuite.methods.{name}"
    assert METHODS.get("replay").config_cls is ReplayConfig
    assert "no_such_method" not in METHODS


def test_unknown_name_lists_available_names():
    with pytest.raises(RegistryError) as info:
        METHODS.get("replai")
    msg = str(info.value)
    assert msg.startswith("unknown method 'replai'; available: ")
    for name in BUILTINS:
        assert name in msg
    assert isinstance(info.value, KeyError)  # dict-style callers can catch it
    assert not msg.startswith('"')  # readable, not KeyError-quoted


def test_registering_a_different_object_twice_raises():
    reg: Registry[object] = Registry("widget", GROUP)
    first, second = object(), object()
    assert reg.register("w", first, origin="pkg_a") is first
    assert reg.register("w", first, origin="pkg_a") is first  # same object again: fine
    with pytest.raises(RegistryError) as info:
        reg.register("w", second, origin="pkg_b")
    msg = str(info.value)
    assert "widget 'w' is registered twice" in msg and "pkg_a" in msg and "pkg_b" in msg
    assert reg._entries["w"] is first and reg._origin["w"] == "pkg_a"  # the clash changed nothing


def test_builtin_method_cannot_be_replaced(isolated_methods):
    original = METHODS.get("replay")
    impostor = MethodSpec("replay", ReplayConfig, lambda cfg, ctx: [])
    with pytest.raises(RegistryError, match="method 'replay' is registered twice"):
        METHODS.register("replay", impostor, origin="impostor_pkg")
    assert METHODS.get("replay") is original


def test_decorator_registers_with_module_origin(monkeypatch):
    reg: Registry[object] = Registry("widget", GROUP)
    monkeypatch.setattr(clsuite.core.registry, "entry_points", lambda *, group: [])

    @reg.decorator("fancy")
    def fancy():
        return 1

    assert reg.get("fancy") is fancy and reg.origin("fancy") == __name__
    assert reg.names() == ["fancy"]


def test_builtins_module_is_imported_lazily(plugin_dir, holder, fake_entry_points):
    fake_entry_points()
    plugin_dir(
        "clsuite_tp_builtins",
        """
        import clsuite_tp_holder
        clsuite_tp_holder.REGISTRY.register("core", "CORE", origin=__name__)
        """,
    )
    reg: Registry[str] = Registry("widget", GROUP, builtins="clsuite_tp_builtins")
    holder.REGISTRY = reg
    assert "clsuite_tp_builtins" not in sys.modules
    assert reg.names() == ["core"]
    assert "clsuite_tp_builtins" in sys.modules
    assert reg.origin("core") == "clsuite_tp_builtins"


# -- third-party entry points -------------------------------------------------------------------


def test_entry_point_targeting_the_component_object(plugin_dir, fake_entry_points):
    plugin_dir(
        "clsuite_tp_component",
        """
        class Widget:
            pass

        WIDGET = Widget()
        """,
    )
    fake_entry_points(("widget", "clsuite_tp_component:WIDGET"))
    reg: Registry[object] = Registry("method", GROUP)
    assert "clsuite_tp_component" not in sys.modules  # nothing imported before the first query
    assert reg.names() == ["widget"]
    module = sys.modules["clsuite_tp_component"]
    assert reg.get("widget") is module.WIDGET
    assert reg.origin("widget") == "clsuite_tp_component:WIDGET"
    assert "widget" in reg


def test_entry_point_targeting_a_self_registering_module(plugin_dir, holder, fake_entry_points):
    plugin_dir(
        "clsuite_tp_selfreg",
        """
        import clsuite_tp_holder

        @clsuite_tp_holder.REGISTRY.decorator("gadget")
        class Gadget:
            pass
        """,
    )
    fake_entry_points(("gadget", "clsuite_tp_selfreg"))
    reg: Registry[object] = Registry("method", GROUP)
    holder.REGISTRY = reg
    assert reg.names() == ["gadget"]
    assert reg.get("gadget") is sys.modules["clsuite_tp_selfreg"].Gadget
    assert reg.origin("gadget") == "clsuite_tp_selfreg"


def test_both_entry_point_forms_together_and_only_from_their_group(plugin_dir, holder, monkeypatch):
    plugin_dir("clsuite_tp_component", "WIDGET = object()\n")
    plugin_dir(
        "clsuite_tp_selfreg",
        """
        import clsuite_tp_holder
        clsuite_tp_holder.REGISTRY.register("gadget", "GADGET", origin=__name__)
        """,
    )
    eps = [
        EntryPoint(name="widget", value="clsuite_tp_component:WIDGET", group=GROUP),
        EntryPoint(name="gadget", value="clsuite_tp_selfreg", group=GROUP),
        EntryPoint(name="alien", value="clsuite_tp_no_such_module:X", group="some.other.group"),
    ]
    queried: list[str] = []

    def entry_points(*, group):
        queried.append(group)
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(clsuite.core.registry, "entry_points", entry_points)
    reg: Registry[object] = Registry("method", GROUP)
    holder.REGISTRY = reg
    assert reg.names() == ["gadget", "widget"]
    assert reg.get("gadget") == "GADGET"
    assert reg.get("widget") is sys.modules["clsuite_tp_component"].WIDGET
    assert queried == [GROUP]  # entry points are scanned once, for this group only


def test_self_registering_module_that_registers_nothing_is_recorded_as_broken(plugin_dir, fake_entry_points):
    plugin_dir("clsuite_tp_silent", "X = 1\n")
    fake_entry_points(("ghost", "clsuite_tp_silent"))
    reg: Registry[object] = Registry("method", GROUP)
    assert reg.names() == []
    with pytest.raises(RegistryError) as info:
        reg.get("ghost")
    msg = str(info.value)
    assert "'ghost'" in msg and "'clsuite_tp_silent'" in msg and GROUP in msg
    assert "did not register a method named 'ghost'" in msg


@pytest.mark.parametrize(
    "value, source",
    [
        ("clsuite_tp_broken:THING", "raise ImportError('needs tensorflow')\nTHING = 1\n"),
        ("clsuite_tp_broken", "1 / 0\n"),
        ("clsuite_tp_broken:MISSING", "THING = 1\n"),
        ("clsuite_tp_not_installed:THING", None),
    ],
    ids=["import-error", "exception-at-import", "missing-attribute", "missing-module"],
)
def test_entry_point_that_fails_to_import_names_itself(plugin_dir, fake_entry_points, value, source):
    if source is not None:
        plugin_dir("clsuite_tp_broken", source)
    fake_entry_points(("brokenthing", value))
    reg: Registry[object] = Registry("method", GROUP)
    assert reg.names() == []  # listing still works
    [broken] = reg.broken()
    assert (broken.name, broken.value, broken.group) == ("brokenthing", value, GROUP) and broken.error
    with pytest.raises(RegistryError) as info:
        reg.get("brokenthing")
    msg = str(info.value)
    assert "'brokenthing'" in msg
    assert repr(value) in msg and GROUP in msg
    assert "failed to load" in msg and "fix or uninstall that package" in msg


def test_broken_entry_point_keeps_failing_and_others_work(plugin_dir, fake_entry_points):
    plugin_dir("clsuite_tp_component", "WIDGET = object()\n")
    fake_entry_points(("brokenthing", "clsuite_tp_not_installed:X"), ("widget", "clsuite_tp_component:WIDGET"))
    reg: Registry[object] = Registry("method", GROUP)
    assert reg.names() == ["widget"]
    assert reg.get("widget") is sys.modules["clsuite_tp_component"].WIDGET
    for _ in range(2):  # every lookup of the broken name says why, not just "unknown"
        with pytest.raises(RegistryError, match="brokenthing.*failed to load"):
            reg.get("brokenthing")


def test_entry_point_clashing_with_a_builtin_is_refused(plugin_dir, holder, fake_entry_points):
    plugin_dir(
        "clsuite_tp_builtins",
        """
        import clsuite_tp_holder
        clsuite_tp_holder.REGISTRY.register("core", object(), origin=__name__)
        """,
    )
    plugin_dir("clsuite_tp_component", "WIDGET = object()\n")
    fake_entry_points(("core", "clsuite_tp_component:WIDGET"))
    reg: Registry[object] = Registry("method", GROUP, builtins="clsuite_tp_builtins")
    holder.REGISTRY = reg
    assert reg.names() == ["core"]
    assert reg.origin("core") == "clsuite_tp_builtins"  # the built-in wins
    [broken] = reg.broken()
    assert broken.name == "core" and "taken by the built-in" in broken.error
    assert "clsuite_tp_component" not in sys.modules  # refused before importing it


# -- runtime-registered method, end to end through params ---------------------------------------


class MyMethodConfig(MethodConfig):
    alpha: float = Field(1.0, gt=0, description="strength")
    beta: int = Field(2, ge=0)


def _register_mymethod():
    @register_method("mymethod", MyMethodConfig, "a method registered by a test", citation="none")
    def build(cfg, ctx):
        return []

    return build


def test_runtime_method_is_accepted_by_parse_params(isolated_methods):
    build = _register_mymethod()
    assert "mymethod" in METHODS and METHODS.get("mymethod").build is build
    assert METHODS.origin("mymethod") == __name__
    params = parse_params(
        params_dict({"mymethod": {"alpha": 0.5}, "fast": {"type": "mymethod", "beta": 0}, "finetune": {}},
                    ["mymethod", "fast"])
    )
    entry = params.method("mymethod")
    assert entry.type == "mymethod" and entry.config == MyMethodConfig(alpha=0.5, beta=2)
    assert entry.config_dict() == {"alpha": 0.5, "beta": 2}
    fast = params.method("fast")
    assert fast.type == "mymethod" and fast.config == MyMethodConfig(alpha=1.0, beta=0)


def test_runtime_method_hyperparameter_typo_names_key_path_and_allowed_keys(isolated_methods):
    _register_mymethod()
    with pytest.raises(ParamsError) as info:
        parse_params(params_dict({"mymethod": {"alpah": 0.5}}, ["mymethod"]))
    msg = str(info.value)
    assert "methods.mymethod.alpah" in msg
    assert "unknown key 'alpah'" in msg and "allowed keys: alpha, beta" in msg


def test_runtime_method_bad_value_names_key_path(isolated_methods):
    _register_mymethod()
    with pytest.raises(ParamsError) as info:
        parse_params(params_dict({"mymethod": {"beta": -3}}, ["mymethod"]))
    msg = str(info.value)
    assert "methods.mymethod.beta" in msg and "-3" in msg


def test_unregistered_method_in_params_is_rejected(isolated_methods):
    with pytest.raises(ParamsError) as info:
        parse_params(params_dict({"mymethod": {"alpha": 0.5}}, ["mymethod"]))
    msg = str(info.value)
    assert "methods.mymethod.type: unknown method 'mymethod'" in msg
    for name in BUILTINS:
        assert name in msg


def test_runtime_registration_is_cleaned_up(monkeypatch):
    METHODS.names()
    before_entries, before_origin = dict(METHODS._entries), dict(METHODS._origin)
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))
    monkeypatch.setattr(METHODS, "_origin", dict(METHODS._origin))
    _register_mymethod()
    assert "mymethod" in METHODS
    monkeypatch.undo()
    assert "mymethod" not in METHODS
    assert METHODS._entries == before_entries and METHODS._origin == before_origin
    assert set(BUILTINS) <= set(METHODS.names())
