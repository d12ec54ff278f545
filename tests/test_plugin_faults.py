"""Faulty backend plugins, each a distribution of its own, are reported and isolated.

The distributions under ``tests/faulty_plugins/`` are pip-installed once, into
one directory, as a user's site-packages would hold them: a plugin module that
raises on import (``fault_import``), two distributions claiming one name
(``fault_twice``), one claiming the built-in name ``numpy`` (``fault-shadow``),
an lstm whose signature differs from the spec's (``fault_signature``), a
plugin module slow to import whose ``load()`` is slow too (``fault_slow``), and
a sound plugin beside them (``sound``). Faults beyond ``Exception`` and beyond
errors: plugin modules raising ``SystemExit`` (``fault_exit``) or
``KeyboardInterrupt`` (``fault_interrupt``) at import, a ``load()`` calling
``sys.exit`` (``fault_load_exit``), plugin modules calling the registry at
import (``fault_reentrant_get``, ``fault_reentrant_list``), one whose import
never finishes (``fault_hang``), one raising an exception that cannot be
printed (``fault_repr``), and ops returning results that break the spec
(``fault_result``). Each check runs in a fresh interpreter with that directory
on its path, so discovery sees them exactly as it would in a user's environment.

Each fault must show in ``list_backends()`` (status and reason) and in
``rnnspec backends``; every other backend must keep working; and with
``RNNSPEC_STRICT_PLUGINS=1`` each must raise a ``BackendError``. ``get_backend``
must load a slow backend once under concurrent first use, and import no plugin
but the one it is asked for.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

FAULTY_PLUGINS = Path(__file__).resolve().parent / "faulty_plugins"
#: Every backend the tests look at: the built-in numpy, the sound plugin and the faulty ones.
#: Listing only these keeps the frameworks (torch, jax, tensorflow) out of the subprocesses.
BACKENDS = ("numpy", "sound", "fault_import", "fault_twice", "fault_signature", "fault_slow")
#: Below the 0.5 s that fault_slow sleeps at import, far above what the other plugins take.
IMPORT_BUDGET = "0.25"
#: Time limit of a plugin import (RNNSPEC_PLUGIN_IMPORT_TIMEOUT) where fault_hang is looked at.
IMPORT_TIMEOUT = "0.5"
#: The same in strict mode, where fault_slow's 0.5 s import must stay within it.
STRICT_IMPORT_TIMEOUT = "1.5"
#: Variables of the outer run that would change what discovery does in the subprocesses.
_SCRUBBED = (
    "RNNSPEC_BACKEND",
    "RNNSPEC_BACKENDS",
    "RNNSPEC_STRICT_PLUGINS",
    "RNNSPEC_PLUGIN_IMPORT_BUDGET",
    "RNNSPEC_PLUGIN_IMPORT_TIMEOUT",
)
_SCRUBBED_PIP = ("PIP_USER", "PIP_TARGET", "PIP_PREFIX", "PIP_INDEX_URL", "PIP_REQUIRE_VIRTUALENV")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every distribution under ``tests/faulty_plugins``, pip-installed (from copies) by one pip call."""
    if importlib.util.find_spec("setuptools") is None:  # pip builds them with it, offline
        pytest.fail("these tests pip-install the faulty plugins without build isolation: install setuptools")
    root = tmp_path_factory.mktemp("faulty_plugins")
    sources = []
    for project in sorted(p for p in FAULTY_PLUGINS.iterdir() if (p / "pyproject.toml").exists()):
        # A copy: building in place would leave build/ and *.egg-info in the repository.
        copy = shutil.copytree(
            project, root / "src" / project.name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
        )
        sources.append(str(copy))
    target = root / "site"
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_PIP}
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run(
        [*pip, "--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), *sources],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"pip install of the faulty plugins failed:\n{done.stdout}\n{done.stderr}"
    return target


def plugin_environment(site: Path, **variables: str) -> dict[str, str]:
    """The environment of a fresh interpreter that sees the plugins in ``site``, with ``variables`` set."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    env["RNNSPEC_BACKENDS"] = ",".join(BACKENDS)
    env.update(variables)
    return env


def run_python(site: Path, script: str, *, timeout: float = 300, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter that sees the plugins in ``site``, with ``variables`` set."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=site.parent,
        env=plugin_environment(site, **variables),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_json(site: Path, script: str, *, timeout: float = 300, **variables: str) -> Any:
    """Run ``script``, which prints one JSON document last, and return that document."""
    done = run_python(site, script, timeout=timeout, **variables)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- what list_backends reports ----------------------------------------------------

LISTING = """
    import json, sys
    import numpy as np
    import rnnspec

    def rows(records):
        return {
            r.name: {
                "status": r.status,
                "reason": r.reason,
                "error": r.error,
                "warnings": list(r.warnings),
                "loaded": r.loaded,
                "distribution": r.distribution,
                "import_seconds": r.import_seconds,
            }
            for r in records
        }

    unloaded = rows(rnnspec.list_backends(load=False))
    loaded = rows(rnnspec.list_backends())
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    params = rnnspec.init_params("lstm", input_size=3, hidden_size=4, num_layers=2)
    outputs = {name: rnnspec.get_backend(name).lstm(x, params).outputs for name in ("numpy", "sound", "fault_slow")}
    print(json.dumps({
        "unloaded": unloaded,
        "loaded": loaded,
        "same_outputs": {name: bool(np.array_equal(o, outputs["numpy"])) for name, o in outputs.items()},
        "shadow_imported": "fault_shadow" in sys.modules,
    }))
"""


@pytest.fixture(scope="module")
def listing(site: Path) -> dict[str, Any]:
    """What ``list_backends`` says, without loading and then loading, with the faulty plugins installed."""
    result: dict[str, Any] = run_json(site, LISTING, RNNSPEC_PLUGIN_IMPORT_BUDGET=IMPORT_BUDGET)
    return result


def test_every_backend_is_listed_once_under_its_name(listing: dict[str, Any]) -> None:
    assert sorted(listing["unloaded"]) == sorted(BACKENDS)
    assert sorted(listing["loaded"]) == sorted(BACKENDS)


def test_a_plugin_raising_on_import_is_an_error_carrying_its_message(listing: dict[str, Any]) -> None:
    for stage in ("unloaded", "loaded"):
        row = listing[stage]["fault_import"]
        assert row["status"] == "error"
        assert row["loaded"] is False
        assert row["distribution"] == "fault-import"
        assert row["reason"] == row["error"]
        assert "plugin failed to register: RuntimeError: fault_import: the framework exploded" in row["reason"]


def test_a_name_claimed_by_two_distributions_is_an_error_naming_both(listing: dict[str, Any]) -> None:
    for stage in ("unloaded", "loaded"):
        row = listing[stage]["fault_twice"]
        assert row["status"] == "error"
        assert row["loaded"] is False
        assert "backend name 'fault_twice' is claimed by 2 distributions" in row["reason"]
        assert "fault-twice-a 0.1.0" in row["reason"]
        assert "fault-twice-b 0.1.0" in row["reason"]


def test_a_plugin_claiming_a_built_in_name_is_ignored_with_a_warning_and_never_imported(
    listing: dict[str, Any],
) -> None:
    for stage, status in (("unloaded", "warning"), ("loaded", "warning")):
        row = listing[stage]["numpy"]
        assert row["status"] == status
        assert row["error"] is None
        assert row["distribution"] == "rnnspec"
        [warning] = row["warnings"]
        assert "distribution fault-shadow 0.1.0 also registers a backend named 'numpy'" in warning
        assert "(entry point numpy = fault_shadow)" in warning
        assert "it is ignored" in warning
    assert listing["loaded"]["numpy"]["loaded"] is True
    assert listing["shadow_imported"] is False
    assert listing["same_outputs"]["numpy"] is True


def test_an_op_signature_other_than_the_spec_is_an_error_once_loaded(listing: dict[str, Any]) -> None:
    assert listing["unloaded"]["fault_signature"]["status"] == "not loaded"
    assert listing["unloaded"]["fault_signature"]["reason"] is None
    row = listing["loaded"]["fault_signature"]
    assert row["status"] == "error"
    assert row["loaded"] is False
    reason = row["reason"]
    assert "failed to load: rnnspec.errors.SpecMismatchError: backend 'fault_signature' (fault-signature" in reason
    assert "op 'lstm' has signature lstm(x, params, lengths=None, *, dropout_mask=None, recurrent_mask=None, " in reason
    assert "the spec's is lstm(x, params, *, dropout_mask=None, recurrent_mask=None, lengths=None, " in reason


def test_a_plugin_slow_to_import_is_a_warning_with_its_time_and_still_works(listing: dict[str, Any]) -> None:
    for stage in ("unloaded", "loaded"):
        row = listing[stage]["fault_slow"]
        assert row["status"] == "warning"
        assert row["error"] is None
        assert row["import_seconds"] >= 0.5
        [warning] = row["warnings"]
        assert "plugin 'fault_slow' (fault-slow): module 'fault_slow' took" in warning
        assert f"over the budget of {float(IMPORT_BUDGET):g} s (RNNSPEC_PLUGIN_IMPORT_BUDGET)" in warning
        assert "import its framework in load()" in warning
    assert listing["loaded"]["fault_slow"]["loaded"] is True
    assert listing["same_outputs"]["fault_slow"] is True


def test_the_sound_plugin_beside_the_faulty_ones_loads_and_computes(listing: dict[str, Any]) -> None:
    assert listing["unloaded"]["sound"]["status"] == "not loaded"
    row = listing["loaded"]["sound"]
    assert (row["status"], row["reason"], row["loaded"]) == ("ok", None, True)
    assert row["import_seconds"] < float(IMPORT_BUDGET)
    assert listing["same_outputs"]["sound"] is True


def test_a_plugin_within_the_default_budget_is_not_reported_slow(site: Path) -> None:
    script = """
        import json, rnnspec
        r = {r.name: r for r in rnnspec.list_backends(load=False)}["fault_slow"]
        print(json.dumps([r.status, list(r.warnings)]))
    """
    assert run_json(site, script) == ["not loaded", []]


def test_a_budget_that_is_not_a_positive_number_is_refused_naming_the_variable(site: Path) -> None:
    done = run_python(site, "import rnnspec; rnnspec.list_backends(load=False)", RNNSPEC_PLUGIN_IMPORT_BUDGET="soon")
    assert done.returncode != 0
    assert "rnnspec.errors.BackendError: RNNSPEC_PLUGIN_IMPORT_BUDGET='soon': expected a number of seconds > 0" in (
        done.stderr
    )


# -- the command line ----------------------------------------------------------------

CLI = "from rnnspec.cli import main; raise SystemExit(main(['backends']))"
CLI_STRICT = "from rnnspec.cli import main; raise SystemExit(main(['backends', '--strict']))"
CLI_NO_LOAD = "from rnnspec.cli import main; raise SystemExit(main(['backends', '--no-load']))"


def test_the_cli_shows_each_fault_on_its_row_and_exits_one(site: Path) -> None:
    done = run_python(
        site,
        CLI,
        RNNSPEC_PLUGIN_IMPORT_BUDGET=IMPORT_BUDGET,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:2] == ["name", "status"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert sorted(rows) == sorted(BACKENDS)
    assert rows["sound"].split()[1] == "ok"
    assert (
        "ERROR: plugin failed to register: RuntimeError: fault_import: the framework exploded" in rows["fault_import"]
    )
    assert "ERROR: backend name 'fault_twice' is claimed by 2 distributions" in rows["fault_twice"]
    assert "ERROR: failed to load: rnnspec.errors.SpecMismatchError" in rows["fault_signature"]
    assert "WARNING: plugin 'fault_slow' (fault-slow): module 'fault_slow' took" in rows["fault_slow"]
    assert "WARNING: distribution fault-shadow 0.1.0 also registers a backend named 'numpy'" in rows["numpy"]


def test_the_cli_without_loading_marks_unloaded_backends_and_still_shows_faults(site: Path) -> None:
    done = run_python(
        site,
        CLI_NO_LOAD,
        RNNSPEC_BACKENDS="sound,fault_import",
    )
    assert done.returncode == 1, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[2:]}
    assert rows["sound"][1:3] == ["not", "loaded"]
    assert rows["fault_import"][1] == "ERROR:"


def test_the_cli_shows_a_warning_and_exits_zero_or_one_with_strict(site: Path) -> None:
    done = run_python(site, CLI, RNNSPEC_BACKENDS="sound,fault_slow", RNNSPEC_PLUGIN_IMPORT_BUDGET=IMPORT_BUDGET)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:]}
    assert "WARNING: plugin 'fault_slow' (fault-slow): module 'fault_slow' took" in rows["fault_slow"]
    strict = run_python(
        site, CLI_STRICT, RNNSPEC_BACKENDS="sound,fault_slow", RNNSPEC_PLUGIN_IMPORT_BUDGET=IMPORT_BUDGET
    )
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "WARNING: plugin 'fault_slow'" in strict.stdout


def test_the_cli_exits_zero_when_no_backend_listed_is_faulty(site: Path) -> None:
    done = run_python(site, CLI, RNNSPEC_BACKENDS="sound")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[2].split()[:2] == ["sound", "ok"]


# -- strict mode -----------------------------------------------------------------------

STRICT = """
    import json, rnnspec

    outcomes = {{}}
    for call in ("list_backends", "get_backend"):
        try:
            rnnspec.list_backends() if call == "list_backends" else rnnspec.get_backend({get!r})
        except Exception as exc:
            outcomes[call] = {{"classes": [c.__name__ for c in type(exc).__mro__], "message": str(exc)}}
        else:
            outcomes[call] = None
    print(json.dumps(outcomes))
"""


@pytest.mark.parametrize(
    ("backends", "error", "message", "at_discovery"),
    [
        pytest.param(
            "fault_import",
            "BackendLoadError",
            "plugin 'fault_import' (fault-import) failed to register: RuntimeError('fault_import: the framework",
            True,
            id="raises-on-import",
        ),
        pytest.param(
            "fault_twice",
            "PluginConflictError",
            "backend name 'fault_twice' is claimed by 2 distributions: fault-twice-",
            True,
            id="name-claimed-twice",
        ),
        pytest.param(
            "numpy",
            "PluginConflictError",
            "distribution fault-shadow 0.1.0 also registers a backend named 'numpy'",
            True,
            id="shadows-a-built-in",
        ),
        pytest.param(
            "fault_signature",
            "BackendLoadError",
            "backend 'fault_signature' (fault-signature) failed to load: rnnspec.errors.SpecMismatchError",
            False,
            id="signature-mismatch",
        ),
        pytest.param(
            "fault_slow",
            "SlowPluginError",
            "plugin 'fault_slow' (fault-slow): module 'fault_slow' took",
            True,
            id="slow-import",
        ),
        pytest.param(
            "fault_exit",
            "BackendLoadError",
            "plugin 'fault_exit' (fault-exit) failed to register: SystemExit('fault_exit: the plugin module called",
            True,
            id="system-exit-on-import",
        ),
        pytest.param(
            "fault_interrupt",
            "BackendLoadError",
            "plugin 'fault_interrupt' (fault-interrupt) failed to register: KeyboardInterrupt('fault_interrupt: ",
            True,
            id="keyboard-interrupt-on-import",
        ),
        pytest.param(
            "fault_load_exit",
            "BackendLoadError",
            "backend 'fault_load_exit' (fault-load-exit) failed to load: SystemExit: 3",
            False,
            id="system-exit-in-load",
        ),
        pytest.param(
            "fault_reentrant_get",
            "BackendLoadError",
            "plugin 'fault_reentrant_get' (fault-reentrant) failed to register: BackendError(",
            True,
            id="gets-a-backend-at-import",
        ),
        pytest.param(
            "fault_hang",
            "BackendLoadError",
            "plugin 'fault_hang' (fault-hang) failed to register: its module 'fault_hang' did not finish importing "
            f"within {float(STRICT_IMPORT_TIMEOUT):g} s (RNNSPEC_PLUGIN_IMPORT_TIMEOUT)",
            True,
            id="import-never-finishes",
        ),
        pytest.param(
            "fault_repr",
            "BackendLoadError",
            "plugin 'fault_repr' (fault-repr) failed to register: <UnprintableError, whose repr() raised RuntimeError>",
            True,
            id="unprintable-exception",
        ),
    ],
)
def test_strict_plugins_make_each_fault_raise(
    site: Path, backends: str, error: str, message: str, at_discovery: bool
) -> None:
    script = STRICT.format(get="sound")
    outcomes = run_json(
        site,
        script,
        RNNSPEC_BACKENDS=f"sound,{backends}",
        RNNSPEC_STRICT_PLUGINS="1",
        RNNSPEC_PLUGIN_IMPORT_BUDGET=IMPORT_BUDGET,
        RNNSPEC_PLUGIN_IMPORT_TIMEOUT=STRICT_IMPORT_TIMEOUT,
        timeout=120,
    )
    listed = outcomes["list_backends"]
    assert listed is not None, "list_backends() did not raise"
    assert listed["classes"][0] == error
    assert "BackendError" in listed["classes"]
    assert message in listed["message"]
    got = outcomes["get_backend"]
    if at_discovery:
        # A fault found at discovery stops every get_backend: strict means no partly discovered registry.
        assert got is not None, "get_backend('sound') did not raise"
        assert got["classes"][0] == error
        assert message in got["message"]
    else:
        # A load failure belongs to its backend: a sound one still loads.
        assert got is None


def test_strict_plugins_raise_nothing_when_only_sound_plugins_are_looked_at(site: Path) -> None:
    outcomes = run_json(site, STRICT.format(get="sound"), RNNSPEC_BACKENDS="sound", RNNSPEC_STRICT_PLUGINS="1")
    assert outcomes == {"list_backends": None, "get_backend": None}


# -- concurrent first use ------------------------------------------------------------------

THREADS = """
    import json, sys, threading, time
    import rnnspec

    numpy_backend = rnnspec.get_backend("numpy")  # loaded before the race
    barrier = threading.Barrier(9)
    got, errors = [], []

    def first_use():
        barrier.wait()
        try:
            got.append(rnnspec.get_backend("fault_slow"))
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=first_use, name=f"user-{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    barrier.wait()
    time.sleep(0.05)  # the slow load() is under way in one of the threads
    start = time.perf_counter()
    same_numpy = rnnspec.get_backend("numpy") is numpy_backend
    numpy_seconds = time.perf_counter() - start
    loading_meanwhile = len(got) == 0
    for thread in threads:
        thread.join(timeout=60)
    plugin = sys.modules["fault_slow"]
    print(json.dumps({
        "errors": errors,
        "count": len(got),
        "distinct": len({id(b) for b in got}),
        "name": got[0].name if got else None,
        "load_calls": plugin.LOAD_CALLS,
        "load_seconds": plugin.LOAD_SECONDS,
        "same_numpy": same_numpy,
        "numpy_seconds": numpy_seconds,
        "loading_meanwhile": loading_meanwhile,
        "alive": sum(t.is_alive() for t in threads),
    }))
"""


@pytest.fixture(scope="module")
def race(site: Path) -> dict[str, Any]:
    """Eight threads, released together, each getting the slow backend for the first time."""
    result: dict[str, Any] = run_json(site, THREADS, RNNSPEC_BACKENDS="numpy,fault_slow")
    return result


def test_eight_threads_on_first_use_all_get_the_one_same_backend(race: dict[str, Any]) -> None:
    assert race["errors"] == []
    assert race["alive"] == 0
    assert race["count"] == 8
    assert race["distinct"] == 1
    assert race["name"] == "fault_slow"


def test_eight_threads_on_first_use_run_the_slow_load_once(race: dict[str, Any]) -> None:
    [thread] = race["load_calls"]
    assert thread.startswith("user-")


def test_a_loaded_backend_is_returned_at_once_while_another_one_loads(race: dict[str, Any]) -> None:
    assert race["loading_meanwhile"] is True
    assert race["same_numpy"] is True
    assert race["numpy_seconds"] < race["load_seconds"] / 2


def test_a_load_may_get_another_backend_but_not_itself(site: Path, tmp_path: Path) -> None:
    # Two more plugins, written here: "outer" gets "numpy" inside its load(); "itself" gets itself.
    source = """
        from rnnspec.hookspecs import BackendDeclaration, hookimpl
        import rnnspec

        def _load():
            rnnspec.get_backend({target!r})
            from rnnspec.reference import Reference
            return Reference()

        @hookimpl
        def rnnspec_backend():
            return BackendDeclaration(load=_load)
    """
    for backend, target in (("outer", "numpy"), ("itself", "itself")):
        (tmp_path / f"reentrant_{backend}.py").write_text(textwrap.dedent(source.format(target=target)))
        info = tmp_path / f"reentrant_{backend}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: reentrant-{backend}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[rnnspec.backends]\n{backend} = reentrant_{backend}\n")
    script = f"""
        import json, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import rnnspec
        outer = rnnspec.get_backend("outer").name
        try:
            rnnspec.get_backend("itself")
        except rnnspec.errors.BackendLoadError as exc:
            itself = str(exc)
        print(json.dumps([outer, itself]))
    """
    outer, itself = run_json(site, script, RNNSPEC_BACKENDS="numpy,outer,itself")
    assert outer == "outer"
    assert "backend 'itself' is unavailable: failed to load:" in itself
    assert "its load() asked for backend 'itself' itself, which is still loading" in itself


# -- faults beyond Exception: SystemExit and KeyboardInterrupt -------------------------

ESCAPES = """
    import json, sys
    import numpy as np
    import rnnspec

    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype(np.float32)
    params = rnnspec.init_params("lstm", input_size=3, hidden_size=4)
    first = rnnspec.get_backend("numpy").lstm(x, params).outputs.shape  # before anything imported {name}
    rows = {{r.name: [r.status, r.reason, r.loaded] for r in rnnspec.list_backends(load=False)}}
    try:
        rnnspec.get_backend({name!r})
        got = None
    except rnnspec.errors.BackendLoadError as exc:
        got = [str(exc), type(exc.__cause__).__name__]
    after = rnnspec.get_backend("sound").lstm(x, params).outputs.shape
    print(json.dumps({{"first": first, "rows": rows, "got": got, "after": after}}))
"""


@pytest.mark.parametrize(
    ("name", "escape", "message"),
    [
        pytest.param(
            "fault_exit", "SystemExit", "fault_exit: the plugin module called sys.exit at import", id="system-exit"
        ),
        pytest.param(
            "fault_interrupt",
            "KeyboardInterrupt",
            "fault_interrupt: the plugin module raised KeyboardInterrupt at import",
            id="keyboard-interrupt",
        ),
    ],
)
def test_a_plugin_raising_a_base_exception_on_import_is_an_error_and_the_others_work(
    site: Path, name: str, escape: str, message: str
) -> None:
    outcome = run_json(site, ESCAPES.format(name=name), RNNSPEC_BACKENDS=f"numpy,sound,{name}")
    assert outcome["first"] == outcome["after"] == [2, 5, 4]
    status, reason, loaded = outcome["rows"][name]
    assert (status, loaded) == ("error", False)
    assert reason == f"plugin failed to register: {escape}: {message}"
    assert outcome["rows"]["sound"] == ["not loaded", None, False]
    text, cause = outcome["got"]
    assert f"backend {name!r} is unavailable: plugin failed to register: {escape}: {message}" in text
    assert cause == escape


LOAD_EXIT = """
    import json
    import rnnspec

    outcomes = []
    for _ in range(2):
        try:
            rnnspec.get_backend("fault_load_exit")
            outcomes.append(None)
        except rnnspec.errors.BackendLoadError as exc:
            outcomes.append([str(exc), type(exc.__cause__).__name__, exc.__cause__.code])
    row = {r.name: r for r in rnnspec.list_backends()}["fault_load_exit"]
    sound = rnnspec.get_backend("sound").name
    print(json.dumps({"outcomes": outcomes, "row": [row.status, row.reason], "sound": sound}))
"""


def test_a_load_calling_sys_exit_makes_its_backend_unavailable_and_ends_nothing(site: Path) -> None:
    outcome = run_json(site, LOAD_EXIT, RNNSPEC_BACKENDS="sound,fault_load_exit")
    expected = "backend 'fault_load_exit' is unavailable: failed to load: SystemExit: 3"
    assert outcome["outcomes"] == [[expected, "SystemExit", 3]] * 2
    assert outcome["row"] == ["error", "failed to load: SystemExit: 3"]
    assert outcome["sound"] == "sound"


def test_the_cli_lists_every_row_when_plugins_raise_base_exceptions(site: Path) -> None:
    done = run_python(site, CLI, RNNSPEC_BACKENDS="sound,fault_exit,fault_interrupt,fault_load_exit")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:]}
    assert sorted(rows) == ["fault_exit", "fault_interrupt", "fault_load_exit", "sound"]
    assert rows["sound"].split()[1] == "ok"
    assert "ERROR: plugin failed to register: SystemExit: fault_exit:" in rows["fault_exit"]
    assert "ERROR: plugin failed to register: KeyboardInterrupt: fault_interrupt:" in rows["fault_interrupt"]
    assert "ERROR: failed to load: SystemExit: 3" in rows["fault_load_exit"]


def test_an_exception_that_cannot_be_printed_is_reported_without_raising(site: Path) -> None:
    script = """
        import json, rnnspec
        print(json.dumps({r.name: [r.status, r.reason] for r in rnnspec.list_backends(load=False)}))
    """
    rows = run_json(site, script, RNNSPEC_BACKENDS="sound,fault_repr")
    assert rows["sound"] == ["not loaded", None]
    reason = "plugin failed to register: fault_repr.UnprintableError: <exception str() failed>"
    assert rows["fault_repr"] == ["error", reason]


# -- plugins calling the registry at import ---------------------------------------------

REENTRANT = """
    import json
    import rnnspec

    rows = {r.name: [r.status, r.error, r.loaded] for r in rnnspec.list_backends()}
    try:
        rnnspec.get_backend("fault_reentrant_get")
        got = None
    except rnnspec.errors.BackendLoadError as exc:
        got = str(exc)
    print(json.dumps({"rows": rows, "got": got, "numpy": rnnspec.get_backend("numpy").name}))
"""


def test_a_plugin_calling_the_registry_at_import_fails_alone(site: Path) -> None:
    outcome = run_json(site, REENTRANT, RNNSPEC_BACKENDS="numpy,sound,fault_reentrant_get,fault_reentrant_list")
    rows = outcome["rows"]
    assert rows["numpy"][1:] == [None, True]
    assert rows["sound"] == ["ok", None, True]
    for name, call in (("fault_reentrant_get", "get_backend('numpy')"), ("fault_reentrant_list", "list_backends()")):
        status, error, loaded = rows[name]
        assert (status, loaded) == ("error", False)
        assert error.startswith(f"plugin failed to register: rnnspec.errors.BackendError: rnnspec.{call} was called")
        assert f"while the module of plugin {name!r} was being imported" in error
        assert "call it in load()" in error
    assert "backend 'fault_reentrant_get' is unavailable: plugin failed to register:" in outcome["got"]
    assert outcome["numpy"] == "numpy"


def test_a_plugin_getting_a_backend_at_import_fails_alone_when_got_first(site: Path) -> None:
    script = """
        import json, rnnspec
        try:
            rnnspec.get_backend("fault_reentrant_get")
            got = None
        except rnnspec.errors.BackendLoadError as exc:
            got = str(exc)
        rows = {r.name: [r.status, r.error is None] for r in rnnspec.list_backends()}
        print(json.dumps({"got": got, "rows": rows}))
    """
    outcome = run_json(site, script, RNNSPEC_BACKENDS="numpy,sound,fault_reentrant_get")
    assert "rnnspec.get_backend('numpy') was called while the module of plugin 'fault_reentrant_get'" in outcome["got"]
    assert outcome["rows"]["sound"] == ["ok", True]
    assert outcome["rows"]["numpy"][1] is True
    assert outcome["rows"]["fault_reentrant_get"] == ["error", False]


# -- a plugin whose import never finishes -------------------------------------------------

HANG = """
    import json, sys, time
    import rnnspec

    start = time.perf_counter()
    numpy_name = rnnspec.get_backend("numpy").name
    imported_by_get = "fault_hang" in sys.modules
    get_seconds = time.perf_counter() - start
    start = time.perf_counter()
    rows = {r.name: [r.status, r.reason, r.import_seconds] for r in rnnspec.list_backends(load=False)}
    list_seconds = time.perf_counter() - start
    try:
        rnnspec.get_backend("fault_hang")
        got = None
    except rnnspec.errors.BackendLoadError as exc:
        got = str(exc)
    print(json.dumps({
        "numpy": numpy_name,
        "imported_by_get": imported_by_get,
        "get_seconds": get_seconds,
        "rows": rows,
        "list_seconds": list_seconds,
        "got": got,
    }))
"""


@pytest.fixture(scope="module")
def hang(site: Path) -> dict[str, Any]:
    """get_backend('numpy'), then a listing, then get_backend('fault_hang'), beside a plugin that hangs at import."""
    result: dict[str, Any] = run_json(
        site, HANG, RNNSPEC_BACKENDS="numpy,sound,fault_hang", RNNSPEC_PLUGIN_IMPORT_TIMEOUT=IMPORT_TIMEOUT, timeout=60
    )
    return result


def test_getting_a_backend_imports_no_other_plugin(hang: dict[str, Any]) -> None:
    assert hang["numpy"] == "numpy"
    assert hang["imported_by_get"] is False
    assert hang["get_seconds"] < float(IMPORT_TIMEOUT)


def test_a_plugin_whose_import_never_finishes_is_an_error_after_the_time_limit(hang: dict[str, Any]) -> None:
    status, reason, seconds = hang["rows"]["fault_hang"]
    assert status == "error"
    assert seconds is None
    assert reason == (
        "plugin failed to register: its module 'fault_hang' did not finish importing within "
        f"{float(IMPORT_TIMEOUT):g} s (RNNSPEC_PLUGIN_IMPORT_TIMEOUT); it is left running in a background thread"
    )
    assert hang["rows"]["sound"][:2] == ["not loaded", None]
    assert float(IMPORT_TIMEOUT) <= hang["list_seconds"] < 10 * float(IMPORT_TIMEOUT)
    assert "backend 'fault_hang' is unavailable: plugin failed to register: its module 'fault_hang'" in hang["got"]


def test_the_cli_lists_beside_a_plugin_whose_import_never_finishes(site: Path) -> None:
    done = run_python(
        site, CLI_NO_LOAD, RNNSPEC_BACKENDS="sound,fault_hang", RNNSPEC_PLUGIN_IMPORT_TIMEOUT=IMPORT_TIMEOUT, timeout=60
    )
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:]}
    assert rows["sound"].split()[1:3] == ["not", "loaded"]
    assert "ERROR: plugin failed to register: its module 'fault_hang' did not finish importing" in rows["fault_hang"]


def test_a_time_limit_that_is_not_a_positive_number_is_refused_naming_the_variable(site: Path) -> None:
    done = run_python(site, "import rnnspec; rnnspec.list_backends(load=False)", RNNSPEC_PLUGIN_IMPORT_TIMEOUT="0")
    assert done.returncode != 0
    assert "rnnspec.errors.BackendError: RNNSPEC_PLUGIN_IMPORT_TIMEOUT='0': expected a number of seconds > 0" in (
        done.stderr
    )


def test_ctrl_c_interrupts_a_listing_that_waits_on_a_hung_import(site: Path) -> None:
    # Python leaves SIGINT ignored when it starts with it ignored (a command run in the background by a
    # shell, as CI runners and nohup runs may start pytest): the user's Ctrl-C is the default handler's.
    script = """
        import signal, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import rnnspec
        print("listing", flush=True)
        rnnspec.list_backends(load=False)
        print("listed", flush=True)
    """
    marker = site.parent / "fault_hang_started"
    marker.unlink(missing_ok=True)
    env = plugin_environment(
        site,
        RNNSPEC_BACKENDS="sound,fault_hang",
        RNNSPEC_PLUGIN_IMPORT_TIMEOUT="120",
        RNNSPEC_TEST_HANG_MARKER=str(marker),
    )
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=site.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "listing\n"
        # Ctrl-C while the listing waits on the hung import, not before it starts (a loaded machine
        # can take longer than any fixed pause to get there).
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the hanging plugin's import never started"
        time.sleep(0.2)  # from the plugin's thread to the main thread's wait on it
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert "listed" not in out
    assert process.returncode != 0
    assert "KeyboardInterrupt" in err


# -- ops whose results break the spec ---------------------------------------------------

RESULTS = """
    import json
    import numpy as np
    import rnnspec

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    backend = rnnspec.get_backend("fault_result")
    calls = {
        op: (lambda op=op: getattr(backend, op)(x, rnnspec.init_params(op, input_size=3, hidden_size=4, num_layers=2)))
        for op in ("rnn", "lstm", "gru", "indrnn", "qrnn")
    }
    a, b = rng.uniform(size=(2, 2, 5, 4)).astype(np.float32)
    calls["linear_recurrence"] = lambda: backend.linear_recurrence(a, b)
    outcomes = {}
    for op, call in calls.items():
        try:
            call()
            outcomes[op] = None
        except Exception as exc:
            outcomes[op] = [type(exc).__name__, str(exc)]
    print(json.dumps(outcomes))
"""

#: What the check of each damaged op says (after "backend 'fault_result': op '<op>' returned a result that breaks
#: the spec: "), and None for the sound indrnn.
DAMAGE_REPORTS = {
    "lstm": "result: expected a SequenceResult (outputs, state), got NoneType",
    "gru": "result.outputs: expected an array of shape (2, 5, 4) (batch, time, H), got shape (2, 5, 5)",
    "rnn": "result.state: expected a sequence of 2 layer states (one per layer), got a sequence of length 1",
    "qrnn": "result: expected a SequenceResult (outputs, state), got tuple",
    "linear_recurrence": "result: expected an array of shape (2, 5, 4) (batch, time, H), got shape (2, 4, 4)",
    "indrnn": None,
}


@pytest.mark.parametrize("strict", ["0", "1"], ids=["lenient", "strict"])
def test_an_op_whose_result_breaks_the_spec_raises_instead_of_returning_it(site: Path, strict: str) -> None:
    outcomes = run_json(site, RESULTS, RNNSPEC_BACKENDS="fault_result", RNNSPEC_STRICT_PLUGINS=strict)
    for op, report in DAMAGE_REPORTS.items():
        if report is None:
            assert outcomes[op] is None
            continue
        assert outcomes[op] == [
            "SpecMismatchError",
            f"backend 'fault_result': op {op!r} returned a result that breaks the spec: {report}",
        ]


CHECKED_LISTING = """
    import json, rnnspec
    unchecked = {r.name: [r.status, r.reason] for r in rnnspec.list_backends()}
    checked = {r.name: [r.status, r.reason, dict(r.broken_ops)] for r in rnnspec.list_backends(check=True)}
    print(json.dumps({"unchecked": unchecked, "checked": checked}))
"""


def test_listing_with_check_shows_each_op_whose_result_breaks_the_spec(site: Path) -> None:
    outcome = run_json(site, CHECKED_LISTING, RNNSPEC_BACKENDS="sound,fault_result")
    # Without the check, status reads what loading proves: the implementation loads and matches the signatures.
    assert outcome["unchecked"]["fault_result"] == ["ok", None]
    status, reason, broken = outcome["checked"]["fault_result"]
    assert status == "error"
    assert sorted(broken) == sorted(op for op, report in DAMAGE_REPORTS.items() if report is not None)
    assert broken["lstm"] == (
        "rnnspec.errors.SpecMismatchError: backend 'fault_result': op 'lstm' returned a result that breaks the spec: "
        "result: expected a SequenceResult (outputs, state), got NoneType"
    )
    # The spec's order of ops (rnn first), whatever order the plugin lists them in.
    assert reason.startswith("op 'rnn' is broken: rnnspec.errors.SpecMismatchError: backend 'fault_result': op 'rnn'")
    assert outcome["checked"]["sound"] == ["ok", None, {}]


def test_the_cli_with_check_shows_broken_ops_and_exits_one(site: Path) -> None:
    check = "from rnnspec.cli import main; raise SystemExit(main(['backends', '--check']))"
    done = run_python(site, check, RNNSPEC_BACKENDS="sound,fault_result")
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:]}
    assert rows["sound"].split()[1] == "ok"
    assert "ERROR: op 'rnn' is broken: rnnspec.errors.SpecMismatchError" in rows["fault_result"]
    assert run_python(site, CLI, RNNSPEC_BACKENDS="sound,fault_result").returncode == 0


def test_strict_plugins_make_a_checked_listing_raise_for_a_broken_op(site: Path) -> None:
    script = """
        import json, rnnspec
        try:
            rnnspec.list_backends(check=True)
            got = None
        except rnnspec.errors.BackendError as exc:
            got = [type(exc).__name__, str(exc)]
        print(json.dumps(got))
    """
    got = run_json(site, script, RNNSPEC_BACKENDS="sound,fault_result", RNNSPEC_STRICT_PLUGINS="1")
    assert got[0] == "SpecMismatchError"
    assert got[1].startswith("backend 'fault_result': op 'rnn' returned a result that breaks the spec: result.state")
