"""The backend registry: discovery, plugin isolation, load-time checks, the CLI."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

import rnnspec
import rnnspec.cli
from rnnspec.errors import (
    BackendError,
    BackendLoadError,
    BackendNotFoundError,
    PluginConflictError,
    SpecMismatchError,
    UnsupportedOpError,
)

if TYPE_CHECKING:
    from conftest import PluginInstaller

pytestmark = pytest.mark.usefixtures("fresh_registry")

BROKEN_MESSAGE = "fake framework exploded at import"


def broken_plugin_source() -> str:
    """A plugin module that leaves a marker file beside itself, then raises on import."""
    return (
        "from pathlib import Path\n"
        "Path(__file__).with_suffix('.imported').touch()\n"
        f"raise RuntimeError({BROKEN_MESSAGE!r})\n"
    )


def lstm_call_arguments(seed: int = 0) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    params = rnnspec.init_params("lstm", input_size=3, hidden_size=4, num_layers=2, seed=seed)
    return x, params


def records_by_name(*, load: bool = True) -> dict[str, rnnspec.BackendRecord]:
    return {r.name: r for r in rnnspec.list_backends(load=load)}


def assert_numpy_backend_works() -> None:
    x, params = lstm_call_arguments()
    result = rnnspec.get_backend("numpy").lstm(x, params)
    assert result.outputs.shape == (2, 5, 4)
    assert np.all(np.isfinite(result.outputs))


# -- the numpy backend and a clean import --------------------------------------


def test_the_numpy_backend_is_listed_loaded_and_described() -> None:
    numpy_record = records_by_name()["numpy"]
    assert numpy_record.loaded is True
    assert numpy_record.error is None
    assert numpy_record.distribution == "rnnspec"
    assert numpy_record.version == rnnspec.__version__
    assert {"rnn", "lstm", "gru"} <= set(numpy_record.ops)
    assert numpy_record.framework == "numpy"
    assert numpy_record.framework_version == np.__version__
    assert numpy_record.description != ""


def test_get_backend_returns_the_same_loaded_numpy_backend_every_time() -> None:
    backend = rnnspec.get_backend("numpy")
    assert isinstance(backend, rnnspec.Backend)
    assert backend.name == "numpy"
    assert {"rnn", "lstm", "gru"} <= set(backend.ops)
    assert rnnspec.get_backend("numpy") is backend
    assert_numpy_backend_works()


def test_listing_backends_without_loading_reports_none_as_loaded() -> None:
    numpy_record = records_by_name(load=False)["numpy"]
    assert numpy_record.loaded is False
    assert numpy_record.error is None
    assert numpy_record.ops == ()


def test_importing_rnnspec_and_listing_plugins_imports_no_framework() -> None:
    code = (
        "import sys, rnnspec\n"
        "names = [r.name for r in rnnspec.list_backends(load=False)]\n"
        "frameworks = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'jax', 'tensorflow'})\n"
        "print('numpy' in names, frameworks)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSPEC_")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True []"


# -- a working third-party backend ---------------------------------------------


def test_a_third_party_backend_is_discovered_with_its_distribution(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("fakegood", plugin_dist.source(), distribution="fake-good-dist", version="2.3.4")
    record = records_by_name(load=False)["fakegood"]
    assert (record.distribution, record.version) == ("fake-good-dist", "2.3.4")
    assert record.description == "a fake third-party backend"
    assert record.loaded is False


def test_a_third_party_backend_loads_and_reports_its_framework(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("fakegood", plugin_dist.source(), distribution="fake-good-dist", version="2.3.4")
    backend = rnnspec.get_backend("fakegood")
    assert backend.name == "fakegood"
    assert backend.version == "2.3.4"
    assert backend.ops == ("lstm",)
    record = records_by_name()["fakegood"]
    assert record.loaded is True
    assert record.error is None
    assert (record.framework, record.framework_version, record.device) == ("fakework", "9.9", "cpu")
    assert record.ops == ("lstm",)


def test_a_third_party_lstm_gives_the_numpy_result(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("fakegood", plugin_dist.source())
    x, params = lstm_call_arguments(seed=3)
    lengths = np.array([5, 2])
    expected = rnnspec.get_backend("numpy").lstm(x, params, lengths=lengths, reverse=True)
    got = rnnspec.get_backend("fakegood").lstm(x, params, lengths=lengths, reverse=True)
    np.testing.assert_array_equal(got.outputs, expected.outputs)
    assert len(got.state) == len(expected.state) == 2
    for got_layer, expected_layer in zip(got.state, expected.state, strict=True):
        assert sorted(got_layer) == sorted(expected_layer) == ["c", "h"]
        for key in ("h", "c"):
            np.testing.assert_array_equal(got_layer[key], expected_layer[key])


def test_a_third_party_backend_validates_calls_and_names_itself_in_errors(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("fakegood", plugin_dist.source())
    x, params = lstm_call_arguments()
    with pytest.raises(rnnspec.errors.ShapeError, match=r"lstm \[backend 'fakegood'\]: argument x"):
        rnnspec.get_backend("fakegood").lstm(x[0], params)


def test_a_backend_not_implementing_an_op_raises_unsupported_op_error(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("fakegood", plugin_dist.source(ops=("lstm",)))
    backend = rnnspec.get_backend("fakegood")
    x = np.zeros((2, 5, 3), np.float32)
    params = rnnspec.init_params("gru", input_size=3, hidden_size=4)
    with pytest.raises(UnsupportedOpError, match=r"backend 'fakegood' does not implement op 'gru'") as info:
        backend.gru(x, params)
    assert isinstance(info.value, NotImplementedError)
    assert "['lstm']" in str(info.value)
    with pytest.raises(UnsupportedOpError, match=r"op 'rnn'"):
        backend.check_call("rnn", x, rnnspec.init_params("rnn", input_size=3, hidden_size=4))


# -- a framework that is not installed is not an error ---------------------------------

#: A plugin whose framework (a module no environment has) is absent; its load() must never run.
MISSING_FRAMEWORK_PLUGIN = """
from rnnspec.hookspecs import BackendDeclaration, hookimpl


def _load():
    raise AssertionError("load() ran although the framework is not installed")


@hookimpl
def rnnspec_backend():
    return BackendDeclaration(load=_load, requires=("rnnspec_absent_framework",), install="pip install absentwork")
"""


def test_a_backend_whose_framework_is_absent_is_listed_as_not_installed_with_its_install_command(
    plugin_dist: PluginInstaller,
) -> None:
    plugin_dist.install("absent", MISSING_FRAMEWORK_PLUGIN)
    row = records_by_name()["absent"]
    assert row.status == "not installed"
    assert row.error is None
    assert row.reason == "rnnspec_absent_framework not installed (pip install absentwork)"
    assert_numpy_backend_works()


def test_getting_a_backend_whose_framework_is_absent_says_what_to_install(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("absent", MISSING_FRAMEWORK_PLUGIN)
    with pytest.raises(BackendLoadError, match=r"backend 'absent' is not installed: .*\(pip install absentwork\)"):
        rnnspec.get_backend("absent")


def test_the_cli_lists_an_absent_framework_and_exits_zero_even_when_strict(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin_dist.install("absent", MISSING_FRAMEWORK_PLUGIN)
    monkeypatch.setenv("RNNSPEC_STRICT_PLUGINS", "1")
    assert rnnspec.cli.main(["backends", "--strict"]) == 0
    assert "NOT INSTALLED: rnnspec_absent_framework not installed (pip install absentwork)" in capsys.readouterr().out


# -- broken plugins are isolated -----------------------------------------------


def test_a_plugin_that_raises_on_import_is_reported_and_numpy_keeps_working(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("fakebroken", broken_plugin_source(), distribution="fake-broken-dist")
    records = records_by_name()
    broken = records["fakebroken"]
    assert broken.loaded is False
    assert broken.error is not None
    assert BROKEN_MESSAGE in broken.error
    assert "RuntimeError" in broken.error
    assert broken.distribution == "fake-broken-dist"
    assert records["numpy"].loaded is True
    assert records["numpy"].error is None
    assert_numpy_backend_works()


def test_getting_a_plugin_that_raised_on_import_raises_backend_load_error(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("fakebroken", broken_plugin_source())
    with pytest.raises(BackendLoadError, match=r"backend 'fakebroken' is unavailable") as info:
        rnnspec.get_backend("fakebroken")
    assert BROKEN_MESSAGE in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert isinstance(info.value, ImportError)
    assert_numpy_backend_works()


def test_strict_plugins_make_discovery_raise_for_a_broken_plugin(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_dist.install("fakebroken", broken_plugin_source(), distribution="fake-broken-dist")
    monkeypatch.setenv("RNNSPEC_STRICT_PLUGINS", "1")
    with pytest.raises(BackendLoadError, match=r"plugin 'fakebroken' \(fake-broken-dist\) failed to register") as info:
        rnnspec.list_backends(load=False)
    assert BROKEN_MESSAGE in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(BackendLoadError, match=r"'fakebroken'"):
        rnnspec.get_backend("numpy")


def test_strict_plugins_set_to_zero_keep_discovery_lenient(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_dist.install("fakebroken", broken_plugin_source())
    monkeypatch.setenv("RNNSPEC_STRICT_PLUGINS", "0")
    assert BROKEN_MESSAGE in (records_by_name(load=False)["fakebroken"].error or "")
    assert_numpy_backend_works()


def test_a_plugin_registered_before_a_strict_failure_works_once_strictness_is_lifted(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two sys.path entries fix the discovery order: the good plugin registers, then the broken one fails.
    second = plugin_dist.add_path_entry(plugin_dist.root.parent / "second")
    first = plugin_dist.add_path_entry(plugin_dist.root.parent / "first")
    plugin_dist.install("fakegood", plugin_dist.source(), into=first)
    plugin_dist.install("fakebroken", broken_plugin_source(), into=second)
    monkeypatch.setenv("RNNSPEC_STRICT_PLUGINS", "1")
    with pytest.raises(BackendLoadError, match="fakebroken"):
        rnnspec.list_backends(load=False)
    monkeypatch.delenv("RNNSPEC_STRICT_PLUGINS")
    records = records_by_name()
    assert records["fakegood"].error is None
    assert records["fakegood"].loaded is True
    assert BROKEN_MESSAGE in (records["fakebroken"].error or "")


def test_the_backends_variable_limits_plugins_so_a_broken_one_is_not_even_imported(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = plugin_dist.install("fakebroken", broken_plugin_source())
    marker = plugin_dist.root / f"{module}.imported"
    monkeypatch.setenv("RNNSPEC_BACKENDS", "numpy")
    records = rnnspec.list_backends()
    assert [r.name for r in records] == ["numpy"]
    assert records[0].loaded is True
    assert not marker.exists()
    with pytest.raises(BackendNotFoundError, match=r"no backend named 'fakebroken'.*RNNSPEC_BACKENDS"):
        rnnspec.get_backend("fakebroken")
    assert not marker.exists()

    monkeypatch.delenv("RNNSPEC_BACKENDS")
    rnnspec.registry._reset_for_tests()
    assert "fakebroken" in records_by_name(load=False)
    assert marker.exists()


def test_the_backends_variable_accepts_several_names_with_spaces(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_dist.install("fakegood", plugin_dist.source())
    plugin_dist.install("fakebroken", broken_plugin_source())
    monkeypatch.setenv("RNNSPEC_BACKENDS", " numpy , fakegood ,")
    assert sorted(records_by_name()) == ["fakegood", "numpy"]


def test_two_distributions_claiming_one_name_make_it_unavailable_naming_both(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("fakedup", plugin_dist.source(), distribution="first-dist", version="1.0")
    plugin_dist.install("fakedup", plugin_dist.source(), distribution="second-dist", version="2.0")
    record = records_by_name()["fakedup"]
    assert record.loaded is False
    assert record.error is not None
    assert "first-dist" in record.error
    assert "second-dist" in record.error
    with pytest.raises(BackendLoadError, match=r"'fakedup'") as info:
        rnnspec.get_backend("fakedup")
    assert "first-dist" in str(info.value)
    assert "second-dist" in str(info.value)
    assert isinstance(info.value.__cause__, PluginConflictError)
    assert_numpy_backend_works()


def test_two_distributions_claiming_one_name_raise_a_conflict_when_strict(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_dist.install("fakedup", plugin_dist.source(), distribution="first-dist")
    plugin_dist.install("fakedup", plugin_dist.source(), distribution="second-dist")
    monkeypatch.setenv("RNNSPEC_STRICT_PLUGINS", "1")
    expected = r"'fakedup' is claimed by 2 distributions: first-dist 1.0 and second-dist 1.0"
    with pytest.raises(PluginConflictError, match=expected) as info:
        rnnspec.list_backends(load=False)
    assert "first-dist" in str(info.value)
    assert "second-dist" in str(info.value)


def test_a_plugin_claiming_the_built_in_numpy_name_is_ignored_and_never_imported(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RNNSPEC_BACKENDS", "numpy")  # loads no framework
    module = plugin_dist.install("numpy", broken_plugin_source(), distribution="fake-shadow-dist", version="3.0")
    marker = plugin_dist.root / f"{module}.imported"
    record = records_by_name()["numpy"]
    assert (record.distribution, record.loaded, record.error) == ("rnnspec", True, None)
    assert record.status == "warning"
    [warning] = record.warnings
    assert "distribution fake-shadow-dist 3.0 also registers a backend named 'numpy'" in warning
    assert record.reason == warning
    assert not marker.exists()
    assert_numpy_backend_works()


def test_a_plugin_claiming_a_built_in_name_raises_a_conflict_when_strict(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_dist.install("numpy", broken_plugin_source(), distribution="fake-shadow-dist")
    monkeypatch.setenv("RNNSPEC_STRICT_PLUGINS", "1")
    with pytest.raises(PluginConflictError, match=r"fake-shadow-dist 1.0 also registers a backend named 'numpy'"):
        rnnspec.get_backend("numpy")


def test_a_plugin_slow_to_import_is_reported_slow_again_after_a_rediscovery(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin_dist.install("fakeslowimport", plugin_dist.source(preamble="import time\ntime.sleep(0.3)\n"))
    monkeypatch.setenv("RNNSPEC_PLUGIN_IMPORT_BUDGET", "0.1")
    for _ in range(2):  # the second discovery finds the module imported: the first measurement stands
        record = records_by_name(load=False)["fakeslowimport"]
        assert record.status == "warning"
        assert record.import_seconds is not None
        assert record.import_seconds >= 0.3
        assert "took" in record.warnings[0]
        assert "over the budget of 0.1 s (RNNSPEC_PLUGIN_IMPORT_BUDGET)" in record.warnings[0]
        rnnspec.registry._reset_for_tests()


def test_records_say_ok_not_loaded_or_error_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNSPEC_BACKENDS", "numpy")  # loads no framework
    unloaded = records_by_name(load=False)["numpy"]
    assert (unloaded.status, unloaded.reason) == ("not loaded", None)
    loaded = records_by_name()["numpy"]
    assert (loaded.status, loaded.reason) == ("ok", None)
    failed = rnnspec.BackendRecord(name="x", distribution="d", version="1", error="boom", warnings=("slow",))
    assert (failed.status, failed.reason) == ("error", "boom")


def test_loaded_backends_lists_only_what_is_loaded_and_loads_nothing() -> None:
    assert rnnspec.registry.loaded_backends() == []
    records_by_name(load=False)
    assert rnnspec.registry.loaded_backends() == []
    backend = rnnspec.get_backend("numpy")
    assert backend in rnnspec.registry.loaded_backends()


# -- load-time checks against the spec -----------------------------------------


@pytest.mark.parametrize(
    ("lstm_signature", "flaw"),
    [
        pytest.param("(self, x, params, *, lengths=None, initial_state=None)", "reverse", id="missing-reverse"),
        pytest.param(
            "(self, x, params, *, lengths=None, initial_state=None, reverse=True)", "reverse=True", id="wrong-default"
        ),
        pytest.param(
            "(self, x, params, lengths=None, *, initial_state=None, reverse=False)",
            "lengths=None, *",
            id="positional-lengths",
        ),
        pytest.param(
            "(self, x, params, *, lengths=None, initial_state=None, reverse=False, extra=1)", "extra=1", id="extra"
        ),
    ],
)
def test_an_op_whose_signature_differs_from_the_spec_fails_to_load(
    plugin_dist: PluginInstaller, lstm_signature: str, flaw: str
) -> None:
    plugin_dist.install("fakebad", plugin_dist.source(lstm_signature=lstm_signature), distribution="fake-bad-dist")
    with pytest.raises(BackendLoadError, match=r"backend 'fakebad'") as info:
        rnnspec.get_backend("fakebad")
    message = str(info.value)
    assert "op 'lstm'" in message
    assert "fake-bad-dist" in message
    assert flaw in message
    assert isinstance(info.value.__cause__, SpecMismatchError)
    record = records_by_name()["fakebad"]
    assert record.loaded is False
    assert "SpecMismatchError" in (record.error or "")
    assert_numpy_backend_works()


def test_a_signature_differing_only_in_annotations_loads(plugin_dist: PluginInstaller) -> None:
    signature = (
        "(self, x: object, params: object, *, lengths: object = None, initial_state=None, reverse: bool = False)"
    )
    plugin_dist.install("fakeannotated", plugin_dist.source(lstm_signature=signature))
    assert rnnspec.get_backend("fakeannotated").ops == ("lstm",)


def test_a_plugin_claiming_an_op_outside_the_spec_fails_to_load_naming_it(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("fakeextra", plugin_dist.source(ops=("lstm", "conv_lstm")))
    with pytest.raises(BackendLoadError, match=r"claims op 'conv_lstm', which is not in the spec") as info:
        rnnspec.get_backend("fakeextra")
    assert "backend 'fakeextra'" in str(info.value)
    assert isinstance(info.value.__cause__, SpecMismatchError)


def test_a_plugin_claiming_an_op_it_has_no_method_for_fails_to_load(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("fakeclaim", plugin_dist.source(ops=("lstm", "gru")))
    with pytest.raises(BackendLoadError, match=r"claims op 'gru' but has no method gru\(\)") as info:
        rnnspec.get_backend("fakeclaim")
    assert isinstance(info.value.__cause__, SpecMismatchError)


def test_a_backend_lacking_a_required_dtype_fails_to_load(plugin_dist: PluginInstaller) -> None:
    load_body = """
    class Float32Only(FakeImplementation):
        dtypes = ("float32",)
    return Float32Only()
    """
    plugin_dist.install("fakef32", plugin_dist.source(load_body=load_body))
    with pytest.raises(BackendLoadError, match=r"lack the required \['float64'\]") as info:
        rnnspec.get_backend("fakef32")
    assert isinstance(info.value.__cause__, SpecMismatchError)


def test_a_load_that_raises_because_its_framework_is_missing_is_reported(plugin_dist: PluginInstaller) -> None:
    load_body = """
    import fake_framework_not_installed_xyz  # noqa: F401
    return FakeImplementation()
    """
    plugin_dist.install("fakenofw", plugin_dist.source(load_body=load_body))
    assert records_by_name(load=False)["fakenofw"].error is None
    with pytest.raises(BackendLoadError, match=r"No module named 'fake_framework_not_installed_xyz'") as info:
        rnnspec.get_backend("fakenofw")
    assert "backend 'fakenofw'" in str(info.value)
    assert isinstance(info.value.__cause__, ModuleNotFoundError)
    record = records_by_name()["fakenofw"]
    assert record.loaded is False
    assert "No module named 'fake_framework_not_installed_xyz'" in (record.error or "")
    assert_numpy_backend_works()


def test_a_load_returning_no_implementation_fails_to_load(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("fakeobject", plugin_dist.source(load_body="return object()"))
    with pytest.raises(BackendLoadError, match=r"load\(\) returned object, expected an rnnspec.Implementation"):
        rnnspec.get_backend("fakeobject")


def test_a_plugin_module_without_the_hook_is_reported(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("fakenohook", "VALUE = 1\n")
    error = records_by_name(load=False)["fakenohook"].error or ""
    assert "implements no hook rnnspec_backend" in error
    with pytest.raises(BackendLoadError, match=r"'fakenohook'"):
        rnnspec.get_backend("fakenohook")


def test_a_hook_returning_no_declaration_is_reported(plugin_dist: PluginInstaller) -> None:
    source = "from rnnspec.hookspecs import hookimpl\n\n\n@hookimpl\ndef rnnspec_backend():\n    return 'numpy'\n"
    plugin_dist.install("fakenodecl", source)
    error = records_by_name(load=False)["fakenodecl"].error or ""
    assert "returned str, expected rnnspec.hookspecs.BackendDeclaration" in error


def test_a_failed_load_is_not_retried_and_keeps_raising(plugin_dist: PluginInstaller) -> None:
    module = plugin_dist.install("fakeobject", plugin_dist.source(load_body="return object()"))
    for _ in range(2):
        with pytest.raises(BackendLoadError, match="'fakeobject'"):
            rnnspec.get_backend("fakeobject")
    assert len(sys.modules[module].LOAD_CALLS) == 1


def test_a_keyboard_interrupt_raised_in_load_propagates_and_the_next_get_tries_again(
    plugin_dist: PluginInstaller,
) -> None:
    # load() runs in the caller's thread, where a KeyboardInterrupt cannot be told from Ctrl-C: it is never recorded.
    module = plugin_dist.install("fakeinterrupt", plugin_dist.source(load_body="raise KeyboardInterrupt"))
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            rnnspec.get_backend("fakeinterrupt")
    assert len(sys.modules[module].LOAD_CALLS) == 2
    record = records_by_name(load=False)["fakeinterrupt"]
    assert (record.status, record.error) == ("not loaded", None)


def test_a_hook_that_does_not_return_in_time_is_an_error_and_numpy_keeps_working(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = (
        "import threading\n"
        "from rnnspec.hookspecs import BackendDeclaration, hookimpl\n"
        "RELEASE = threading.Event()\n\n\n"
        "@hookimpl\n"
        "def rnnspec_backend():\n"
        "    RELEASE.wait(30)\n"
        "    return BackendDeclaration(load=None)\n"
    )
    module = plugin_dist.install("fakehookhang", source)
    monkeypatch.setenv("RNNSPEC_PLUGIN_IMPORT_TIMEOUT", "0.2")
    try:
        record = records_by_name(load=False)["fakehookhang"]
    finally:
        sys.modules[module].RELEASE.set()  # the hook's thread ends
    assert record.status == "error"
    assert record.error == (
        "plugin failed to register: its hook rnnspec_backend did not return within 0.2 s "
        "(RNNSPEC_PLUGIN_IMPORT_TIMEOUT); it is left running in a background thread"
    )
    assert record.import_seconds is not None
    assert_numpy_backend_works()


def test_a_package_getting_its_own_backend_at_import_registers_its_plugin_module(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plugin module imports its package, which is still being imported by this thread: another thread would
    # wait for it, so the registry imports such a plugin module here.
    package = plugin_dist.root / "fake_selfish_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import rnnspec\nVERSION = '1.0'\nBACKEND = rnnspec.get_backend('fakeselfish')\n", encoding="utf-8"
    )
    source = plugin_dist.source().replace('description="a fake third-party backend"', "description=f'v{VERSION}'")
    (package / "plugin.py").write_text("from fake_selfish_pkg import VERSION\n" + source, encoding="utf-8")
    info = plugin_dist.root / "fake_selfish_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-selfish-pkg\nVersion: 1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text("[rnnspec.backends]\nfakeselfish = fake_selfish_pkg.plugin\n")
    plugin_dist.modules += ["fake_selfish_pkg", "fake_selfish_pkg.plugin"]
    importlib.invalidate_caches()
    monkeypatch.setenv("RNNSPEC_PLUGIN_IMPORT_TIMEOUT", "2")
    backend = importlib.import_module("fake_selfish_pkg").BACKEND
    assert backend.name == "fakeselfish"
    assert records_by_name(load=False)["fakeselfish"].description == "v1.0"


def test_listing_with_check_calls_every_op_of_numpy_and_finds_none_broken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNSPEC_BACKENDS", "numpy")  # loads no framework
    record = records_by_name(load=False)["numpy"]
    assert record.broken_ops == {}
    [record] = rnnspec.list_backends(check=True)
    assert (record.status, record.reason, record.broken_ops) == ("ok", None, {})
    assert set(record.ops) == set(rnnspec.ops.OPS)


# -- lookup and threads --------------------------------------------------------


def test_an_unknown_backend_name_raises_not_found_listing_available_names(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("fakegood", plugin_dist.source())
    with pytest.raises(BackendNotFoundError, match=r"no backend named 'no-such-backend'") as info:
        rnnspec.get_backend("no-such-backend")
    assert "'numpy'" in str(info.value)
    assert "'fakegood'" in str(info.value)
    assert isinstance(info.value, LookupError)
    assert isinstance(info.value, BackendError)


def test_concurrent_first_use_from_eight_threads_loads_the_backend_once(plugin_dist: PluginInstaller) -> None:
    load_body = """
    time.sleep(0.05)  # widen the window in which an unlocked registry would load twice
    return FakeImplementation()
    """
    module = plugin_dist.install("fakeslow", plugin_dist.source(load_body=load_body))
    barrier = threading.Barrier(8)
    results: list[object] = []
    errors: list[BaseException] = []

    def first_use() -> None:
        barrier.wait()
        try:
            results.append(rnnspec.get_backend("fakeslow"))
        except BaseException as exc:  # collected: a thread's exception would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(results) == 8
    assert all(result is results[0] for result in results)
    assert isinstance(results[0], rnnspec.Backend)
    assert len(sys.modules[module].LOAD_CALLS) == 1


# -- the command line ----------------------------------------------------------


def test_the_cli_prints_a_table_with_numpy_and_exits_zero(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin_dist.install("fakegood", plugin_dist.source(), distribution="fake-good-dist", version="2.3.4")
    monkeypatch.setenv("RNNSPEC_BACKENDS", "numpy,fakegood")
    assert rnnspec.cli.main(["backends"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "status", "distribution", "framework", "device", "ops", "fast", "paths"]
    rows = {line.split()[0]: line.split() for line in lines[2:]}
    assert sorted(rows) == ["fakegood", "numpy"]
    assert rows["numpy"][:3] == ["numpy", "ok", "rnnspec"]
    assert rows["fakegood"] == ["fakegood", "ok", "fake-good-dist", "2.3.4", "fakework", "9.9", "cpu", "lstm", "-"]


def test_the_cli_exits_one_and_shows_the_error_when_a_plugin_is_broken(
    plugin_dist: PluginInstaller, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin_dist.install("fakebroken", broken_plugin_source())
    assert rnnspec.cli.main(["backends"]) == 1
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert rows["numpy"].split()[1] == "ok"
    assert "ERROR" in rows["fakebroken"]
    assert BROKEN_MESSAGE in rows["fakebroken"]


def test_the_cli_in_strict_mode_prints_the_first_fault_without_a_traceback_and_exits_one(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin_dist.install("fakebroken", broken_plugin_source(), distribution="fake-broken-dist")
    monkeypatch.setenv("RNNSPEC_STRICT_PLUGINS", "1")
    assert rnnspec.cli.main(["backends", "--no-load"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("rnnspec backends: BackendLoadError: plugin 'fakebroken' (fake-broken-dist) failed")
    assert BROKEN_MESSAGE in captured.err
    assert "Traceback" not in captured.err


def test_the_cli_without_loading_imports_no_framework_and_exits_zero(
    plugin_dist: PluginInstaller, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    load_body = """
    import fake_framework_not_installed_xyz  # noqa: F401
    return FakeImplementation()
    """
    plugin_dist.install("fakenofw", plugin_dist.source(load_body=load_body))
    monkeypatch.setenv("RNNSPEC_BACKENDS", "numpy,fakenofw")
    assert rnnspec.cli.main(["backends", "--no-load"]) == 0
    assert "fakenofw" in capsys.readouterr().out
    rnnspec.registry._reset_for_tests()
    assert rnnspec.cli.main(["backends"]) == 1
    assert "No module named 'fake_framework_not_installed_xyz'" in capsys.readouterr().out


def test_the_cli_reports_when_no_backend_is_registered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RNNSPEC_BACKENDS", "no-such-backend")
    assert rnnspec.cli.main(["backends"]) == 0
    assert capsys.readouterr().out.strip() == "no backends registered"


def test_the_console_script_lists_numpy_and_exits_one_with_a_broken_plugin(plugin_dist: PluginInstaller) -> None:
    plugin_dist.install("fakebroken", broken_plugin_source())
    script = Path(sys.executable).parent / ("rnnspec.exe" if os.name == "nt" else "rnnspec")
    assert script.exists(), f"console script not installed at {script}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNNSPEC_")}
    env["PYTHONPATH"] = os.pathsep.join([str(plugin_dist.root), *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run([str(script), "backends"], capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 1, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:]}
    assert rows["numpy"].split()[1] == "ok"
    assert BROKEN_MESSAGE in rows["fakebroken"]
