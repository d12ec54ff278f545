"""Sessions for rnnspec. Run ``nox -l`` to list them; ``nox -R`` reuses venvs locally.

Every session installs what it needs into its own venv; torch comes as the
CPU build (``torch==2.13.0``), which pip finds locally.

The conformance suite runs on one backend per session: ``conformance-numpy``,
``conformance-torch``, ``conformance-jax``, ``conformance-tensorflow`` (each
with only its framework, CPU build), or ``nox -s conformance --
--rnnspec-backend=NAME`` for any backend. ``conformance-mutants`` checks that
the suite fails on deliberately wrong backends (tests/mutants/).
"""

from __future__ import annotations

import glob
import os
import shutil

import nox

nox.options.default_venv_backend = "venv"  # pip, not uv: uv would fetch a CUDA torch
nox.options.sessions = ["tests", "lint", "typecheck", "conformance-numpy"]

PYTHON = "3.11"
TORCH_CPU = "torch==2.13.0"
TENSORFLOW_CPU = ("tensorflow-cpu; platform_machine == 'x86_64'", "tensorflow; platform_machine != 'x86_64'")

#: What the test session installs beside rnnspec: torch's and jax's CPU builds, Flax for the NNX layers,
#: and Triton, whose interpreter runs the GPU kernels on the CPU. TensorFlow's tests run in a session of
#: their own: TensorFlow and Triton (which torch imports when it is installed) abort the process with an
#: LLVM error ("Option 'bitcode-mdindex-threshold' registered more than once") when loaded in that order.
TEST_FRAMEWORKS = (TORCH_CPU, "triton", "jax", "flax")
#: The tests that need TensorFlow, run by ``tests-tensorflow``.
TENSORFLOW_TESTS = "tests/test_tensorflow_*.py"

#: pytest-xdist, and its options: the test and conformance sessions run their tests in two worker
#: processes, one per core of the CI machine (the conformance plugin's summary is gathered from the
#: workers' reports).
XDIST = "pytest-xdist>=3"
WORKERS = ("-n", "2")

#: The built-in backends the conformance suite has a session for, with the (CPU) framework each needs.
CONFORMANCE_BACKENDS: dict[str, tuple[str, ...]] = {
    "numpy": (),
    "torch": (TORCH_CPU,),
    "jax": ("jax",),
    "tensorflow": TENSORFLOW_CPU,
}

#: Environment of every conformance run: one thread per framework in each of the two xdist workers (on two
#: cores, torch's default two OpenMP threads per worker spin against each other).
CONFORMANCE_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
#: Environment of a backend's conformance run, beside the threads: jax computes float64 only with x64 enabled;
#: torch's compiled check compiles with aot_eager (dynamo and AOTAutograd trace every op as inductor's would,
#: without generating code: about a quarter of inductor's CPU time on the 2-core CI machine). jax's suite is
#: mostly XLA compiling small programs: LLVM's cheaper optimisation level cuts its CPU time by about a quarter
#: (test_edge_cases: 195 -> 146 s) and changes only the machine code's speed, not the HLO programs the backend
#: builds (XLA's CPU fast math is off either way).
CONFORMANCE_ENV: dict[str, dict[str, str]] = {
    "jax": {
        "JAX_ENABLE_X64": "1",
        "XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
    },
    "torch": {"RNNSPEC_TORCH_COMPILE_BACKEND": "aot_eager"},
}

#: Fails, naming the backend, unless ``rnnspec.get_backend(argv[1])`` loads it.
_CHECK_BACKEND = """
import sys

import rnnspec

name = sys.argv[1]
try:
    backend = rnnspec.get_backend(name)
except rnnspec.RnnspecError as err:
    sys.exit(f"conformance: backend {name!r} did not load or is not registered: {err}")
impl = backend.implementation
print(f"conformance: backend {name!r} {backend.version} on {impl.framework} {impl.framework_version()}")
"""


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (the frameworks are test-only dependencies). ``nox -s tests -- -k lstm`` forwards args."""
    session.install("-e", ".[test,safetensors,bench,examples]", XDIST, *TEST_FRAMEWORKS)
    # pytest exits 5 when it collects nothing; nox treats any non-zero exit as failure.
    session.run("pytest", *WORKERS, *session.posargs)


@nox.session(python=PYTHON, name="tests-tensorflow")
def tests_tensorflow(session: nox.Session) -> None:
    """Run the TensorFlow backend's tests, with TensorFlow (CPU) and without torch or Triton (see TEST_FRAMEWORKS)."""
    session.install("-e", ".[test,safetensors,examples]", XDIST, *TENSORFLOW_CPU)
    session.run("pytest", *WORKERS, *(session.posargs or glob.glob(TENSORFLOW_TESTS)))


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Lint and check formatting with ruff."""
    session.install("ruff==0.17.6")  # pinned: formatting changes between releases
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy --strict, as installed (the source folders map onto rnnspec.*)."""
    # pytest, hypothesis: rnnspec.conformance; torch and jax, so that their backends are checked against their
    # types. TensorFlow and Keras ship no py.typed, so mypy would not read them: they are not installed here.
    session.install("mypy", "numpy", "pluggy", "pytest", "hypothesis", *TEST_FRAMEWORKS)
    shutil.rmtree("build", ignore_errors=True)  # setuptools would reuse stale copies from an earlier build
    site = f"{session.create_tmp()}/site"
    session.run("python", "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target", site, ".")
    session.run("mypy", "--config-file", "pyproject.toml", "-p", "rnnspec", env={"MYPYPATH": site})


def _check_backend(session: nox.Session, backend: str) -> None:
    """Fail the session, naming ``backend``, unless it loads in the session's venv."""
    script = os.path.join(session.create_tmp(), "check_backend.py")
    with open(script, "w", encoding="utf-8") as f:
        f.write(_CHECK_BACKEND)
    session.run("python", script, backend)


#: Backends whose suite runs one test module per process: XLA's CPU compiler aborts the process (inside
#: backend_compile_and_load) once one process has compiled the programs of several modules of the suite
#: (reproduced in three full runs, at different tests; each module passes in a process of its own).
CONFORMANCE_PER_MODULE = frozenset({"jax"})
CONFORMANCE_MODULES = (
    "test_values",
    "test_gradients",
    "test_properties",
    "test_compiled",
    "test_checkpointing",
    "test_errors",
    "test_inputs",
    "test_edge_cases",
)


def _run_conformance(session: nox.Session, backend: str, *args: str) -> None:
    """Check that ``backend`` loads, then run the conformance suite on it (ci profile)."""
    _check_backend(session, backend)
    env = {**CONFORMANCE_THREADS, **CONFORMANCE_ENV.get(backend, {})}
    options = (f"--rnnspec-backend={backend}", "--hypothesis-profile=ci", *WORKERS, *args)
    if backend not in CONFORMANCE_PER_MODULE:
        session.run("pytest", "--pyargs", "rnnspec.conformance", *options, env=env)
        return
    for module in CONFORMANCE_MODULES:
        session.run("pytest", "--pyargs", f"rnnspec.conformance.{module}", *options, env=env)


def _conformance_session(backend: str, frameworks: tuple[str, ...]) -> None:
    def session_function(session: nox.Session) -> None:
        session.install("-e", ".[conformance]", XDIST, *frameworks)
        _run_conformance(session, backend, *session.posargs)

    what = f", {frameworks[0].split(';')[0]} (CPU)" if frameworks else ""
    session_function.__doc__ = f"Run the conformance suite on backend {backend!r}{what}; pytest args go after --."
    session_function.__name__ = f"conformance_{backend}"
    nox.session(python=PYTHON, name=f"conformance-{backend}")(session_function)


for _backend, _frameworks in CONFORMANCE_BACKENDS.items():
    _conformance_session(_backend, _frameworks)


@nox.session(python=PYTHON, name="conformance-numpy-thorough")
def conformance_numpy_thorough(session: nox.Session) -> None:
    """Run the conformance suite on the NumPy reference under the thorough profile (300 random cases a test,
    4 per op and size in the large tier): the reference must pass every profile, every time. Before a release."""
    session.install("-e", ".[conformance]", XDIST)
    _check_backend(session, "numpy")
    options = ("--rnnspec-backend=numpy", "--hypothesis-profile=thorough", *WORKERS, *session.posargs)
    session.run("pytest", "--pyargs", "rnnspec.conformance", *options, env=CONFORMANCE_THREADS)


@nox.session(python=PYTHON)
def conformance(session: nox.Session) -> None:
    """Run the conformance suite on any backend: ``nox -s conformance -- --rnnspec-backend=NAME [pytest args]``.

    A built-in backend's framework is installed with it; for another backend,
    list what to install (its distribution, a path) in $RNNSPEC_CONFORMANCE_INSTALL.
    """
    backend = None
    for i, arg in enumerate(session.posargs):
        if arg.startswith("--rnnspec-backend="):
            backend = arg.split("=", 1)[1]
        elif arg == "--rnnspec-backend" and i + 1 < len(session.posargs):
            backend = session.posargs[i + 1]
    if not backend:
        session.error("name the backend: nox -s conformance -- --rnnspec-backend=NAME [pytest args]")
    extra = os.environ.get("RNNSPEC_CONFORMANCE_INSTALL", "").split()
    session.install("-e", ".[conformance]", *CONFORMANCE_BACKENDS.get(backend, ()))
    if extra:
        # A second step: pip cannot resolve a package that requires rnnspec together with -e .[extra].
        session.install(*extra)
    _check_backend(session, backend)
    env = {**CONFORMANCE_THREADS, **CONFORMANCE_ENV.get(backend, {})}
    session.run("pytest", "--pyargs", "rnnspec.conformance", "--hypothesis-profile=ci", *session.posargs, env=env)


@nox.session(python=PYTHON, name="conformance-mutants")
def conformance_mutants(session: nox.Session) -> None:
    """Check that the conformance suite fails on wrong backends (tests/mutants/), and only where they are wrong."""
    # setuptools: the tests pip-install the mutants offline, without build isolation; xdist: one test runs under it.
    session.install("-e", ".[conformance]", "setuptools>=68", XDIST)
    session.run("pytest", "-m", "mutants", "tests/test_conformance_bites.py", *session.posargs)


#: What the bench and examples sessions install: every framework (CPU), without Triton (see TEST_FRAMEWORKS).
ALL_FRAMEWORKS = (TORCH_CPU, "jax", "flax", *TENSORFLOW_CPU)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run the benchmark suite (``python -m rnnspec.bench``); ``nox -s bench -- --quick`` runs the small subset."""
    session.install("-e", ".[bench]", *ALL_FRAMEWORKS)
    session.run("python", "-m", "rnnspec.bench", *session.posargs)


@nox.session(python=PYTHON, name="bench-quick")
def bench_quick(session: nox.Session) -> None:
    """Run the benchmark suite's small subset, to keep it working (CI; nothing is asserted about timings)."""
    session.install("-e", ".[bench]", *ALL_FRAMEWORKS)
    session.run("python", "-m", "rnnspec.bench", "--quick", *session.posargs)


#: The paper tasks in examples/, each run by ``nox -s examples`` in quick mode on every framework backend.
EXAMPLES = ("adding_task.py", "parity_act.py", "indrnn_adding.py", "qrnn_charlm.py", "phased_lstm_frequency.py")
EXAMPLE_BACKENDS = ("torch", "jax", "tensorflow")


@nox.session(python=PYTHON)
def examples(session: nox.Session) -> None:
    """Run each example in quick mode on each framework backend (it must run and write its plot)."""
    session.install("-e", ".[examples]", *ALL_FRAMEWORKS)
    out = session.create_tmp()
    for example in EXAMPLES:
        for backend in EXAMPLE_BACKENDS:
            where = os.path.join(out, example.removesuffix(".py"), backend)
            command = ("python", f"examples/{example}", "--backend", backend, "--quick", "--out", where)
            printed = session.run(*command, silent=True)
            session.log(printed)
            if "--quick: a tiny run" not in str(printed):
                session.error(f"examples/{example} --quick did not say that its tiny run learns nothing")
            if not glob.glob(os.path.join(where, "*.png")):
                session.error(f"examples/{example} --backend {backend} --quick wrote no plot in {where}")


#: What the docs build needs beside mkdocs: latex2mathml turns the equations into MathML (docs/hooks/mathml.py),
#: ziamath ships the math font the site carries (pinned: the hook takes the font file from its package); and
#: what its check needs: playwright, which drives Debian's Chromium (never ``playwright install``).
DOCS_TOOLS = ("latex2mathml>=3.81,<4", "ziamath==0.13", "playwright>=1.40")
DOCS_MATH_TESTS = "tests/test_docs_math.py"


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site with mkdocs, warnings as errors (``site/``), then check in headless Chromium
    that its equations render from disk with no network (tests/test_docs_math.py; skipped without Chromium,
    except on CI)."""
    session.install("-e", ".[docs,test]", *DOCS_TOOLS)
    session.run("mkdocs", "build", "--strict", *session.posargs)
    browser = "required" if os.environ.get("CI") else "optional"
    session.run("pytest", DOCS_MATH_TESTS, env={"RNNSPEC_DOCS_BROWSER": browser})


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """A new user's first contact, on a bare install (``.`` alone, no framework): ``rnnspec backends`` lists the
    frameworks as not installed and exits 0, and the quick start runs on the NumPy reference. (The main job is
    ``conformance-torch``; the README's framework examples run as tests in ``tests`` and ``tests-tensorflow``.)"""
    session.install(".")
    listing = session.run("rnnspec", "backends", silent=True)
    session.log(listing)
    if "NOT INSTALLED" not in str(listing):
        session.error("rnnspec backends on a bare install did not list the frameworks as not installed")
    session.run("python", "examples/quickstart.py")
