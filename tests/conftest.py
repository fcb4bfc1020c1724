"""Session fixtures: tiny random Qwen3-VL checkpoints (seeded, awkward dimensions), their exports
through the real command line, transformers references, the scripted checkpoint and its export,
and generated pictures; the markers and the lanes they make;
the record of which parity tests passed, which the guard test (run last) reads.

Checkpoints and exports are kept on disk across runs (genai_qwen3vl/testing/cache.py: keyed by
preset, seed, flags and a digest of the code that made them; ``GENAI_QWEN3VL_TEST_CACHE=off``
builds them afresh in this session's temporary folder). A test must not write into a folder these
fixtures give it: it copies the folder first (the session fails otherwise, naming the entry).

Markers set here from what a test uses, so that test files need not repeat them: ``server`` (under
tests/serve, or starts a server), ``browser`` (drives chromium), ``subprocess`` (starts a process,
itself or through a fixture or helper) and ``slow``: a browser or another process, an export made
in the test itself, an export of a preset or target beyond the fast lane's (``FAST_PRESETS``,
``FAST_FLAGS``: by parameter, by a row of a module table a parameter names, or named in the code).
``scripts/test.sh --fast`` runs ``-m "not slow"``.
"""

from __future__ import annotations

import inspect
import signal
import types
from pathlib import Path
from typing import NamedTuple

import pytest

from genai_qwen3vl.model.precisions import TARGETS, Target
from genai_qwen3vl.testing.cache import ArtifactCache
from genai_qwen3vl.testing.media import make_picture
from genai_qwen3vl.testing.tiny import (
    ALL_TINY_PRESETS,
    MOE_PRESETS,
    PRESETS,
    QWEN3_5_PRESETS,
    make_scripted_checkpoint,
    make_tiny_checkpoint,
)

# Presets every CPU parity test runs on (see genai_qwen3vl/testing/presets.py for their dimensions).
ALL_PRESETS = tuple(PRESETS)
# Qwen3-VL-MoE presets: tests/verify/test_moe.py checks every artifact of both CPU targets on each
MOE_PRESET_NAMES = tuple(MOE_PRESETS)
# Qwen3.5 presets: tests/verify/test_qwen35.py checks every artifact of both CPU targets on each
QWEN3_5_PRESET_NAMES = tuple(QWEN3_5_PRESETS)

# Gathered from the tests' reports (pytest_runtest_logreport) in the process that runs the session:
# (test name, measured differences) for the summary
_PARITY_RESULTS: list[tuple[str, str]] = []
# (artifact, target flags, preset) of every parity test that passed in this session
PASSED_PARITY: set[tuple[str, tuple[str, ...], str]] = set()
# (artifact, target flags) of every parity test marked cuda (run or skipped)
CUDA_PARITY_TESTS: set[tuple[str, tuple[str, ...]]] = set()
# the user_properties keys that carry them
MEASURED, PASSED, CUDA_PARITY = "parity_measured", "parity_passed", "parity_cuda_test"
GUARD_TEST = "test_every_artifact_target_and_preset_has_a_passing_parity_test"

# The fast lane's model: one preset, one target (a test parametrized with another is slow)
FAST_PRESETS = ("awkward",)
FAST_FLAGS = ("-p", "fp32", "-e", "cpu")
# a test that names another precision or provider exports with it
OTHER_FLAG_VALUES = frozenset({t.precision for t in TARGETS} | {t.provider for t in TARGETS} | {"int8"}) - set(FAST_FLAGS)
SERVE_TESTS = Path(__file__).parent / "serve"
# names whose use in a test, or in a fixture or tests/ helper it reaches, marks it
PROCESS_NAMES = frozenset({"subprocess", "Popen", "ServerProcess", "run_cli"})
BROWSER_NAMES = frozenset({"sync_playwright"})
EXPORT_NAMES = frozenset({"export_main"})  # an export outside the cached fixtures


@pytest.fixture
def record_parity(request):
    """Tests hand their measured differences here; the summary prints them all at the end."""

    def record(report):
        text = report if isinstance(report, str) else ", ".join(f"{k} {v:.2e}" for k, v in report.items())
        request.node.user_properties.append((MEASURED, text))

    return record


def pytest_runtest_logreport(report):
    """What a test's report carries (``user_properties``, which pytest-xdist's workers send to the
    process that runs the session), gathered where the session runs: one path with or without -n."""
    for key, value in report.user_properties:
        if key == MEASURED and report.when == "call":
            _PARITY_RESULTS.append((report.nodeid.split("::")[-1], value))
        elif key == PASSED:
            artifact, flags, preset = value
            PASSED_PARITY.add((artifact, tuple(flags), preset))
        elif key == CUDA_PARITY:
            artifact, flags = value
            CUDA_PARITY_TESTS.add((artifact, tuple(flags)))


def pytest_terminal_summary(terminalreporter):
    if _PARITY_RESULTS:
        terminalreporter.section("measured parity against transformers (max |diff|)")
        for name, text in _PARITY_RESULTS:
            terminalreporter.write_line(f"{name}: {text}")


def cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def pytest_configure(config):
    # A suite started in the background of a non-interactive shell (`cmd &`, nohup in a script, some CI
    # runners) inherits SIGINT ignored, and Python then keeps it ignored: the Ctrl-C tests (in this
    # process and in the commands they start, which inherit an ignored signal but not a handler)
    # would test nothing. Python's own handler, as an interactive start has it.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    config.addinivalue_line("markers", "parity(artifact): a parity test of one artifact against transformers (params: target, preset)")
    config.addinivalue_line("markers", "slow: not in the fast lane (scripts/test.sh --fast); set in conftest.py from what a test uses")
    config.addinivalue_line("markers", "server: a test of the server (under tests/serve, or starts one)")
    config.addinivalue_line("markers", "browser: drives a real browser (chromium through playwright)")
    config.addinivalue_line("markers", "subprocess: starts another process (the command line, a server, a fresh interpreter)")
    config.addinivalue_line("markers", "cuda: needs onnxruntime's CUDA provider and a CUDA device (skipped where there is none)")
    config.addinivalue_line(
        "markers",
        "og_behaviour(version, what): documents what onnxruntime-genai `version` does (often a bug); "
        "fails, with that note, once og changes it",
    )


def _code_uses(code: types.CodeType) -> tuple[set[str], set[str]]:
    """The global and attribute names and the string constants of ``code`` and the code inside it."""
    names, strings = set(code.co_names), set()
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            inner = _code_uses(const)
            names |= inner[0]
            strings |= inner[1]
        elif isinstance(const, str):
            strings.add(const)
    return names, strings


def _uses(obj, seen: set[int]) -> tuple[set[str], set[str]]:
    """``_code_uses`` of a function or class, with that of the tests/ functions and classes it names."""
    names, strings = set(), set()
    if id(obj) in seen:
        return names, strings
    seen.add(id(obj))
    if inspect.isclass(obj):
        members = [m for m in vars(obj).values() if inspect.isfunction(getattr(m, "__func__", m))]
        for member in members:
            inner = _uses(getattr(member, "__func__", member), seen)
            names |= inner[0]
            strings |= inner[1]
        return names, strings
    func = inspect.unwrap(obj)
    if not hasattr(func, "__code__"):
        return names, strings
    names, strings = _code_uses(func.__code__)
    for name in list(names):
        target = func.__globals__.get(name)
        if (inspect.isfunction(target) or inspect.isclass(target)) and target.__module__.split(".")[0] == "tests":
            inner = _uses(target, seen)
            names |= inner[0]
            strings |= inner[1]
    return names, strings


def _flat(value) -> list:
    """``value``'s items, those of its tuples and lists included (``value`` itself if not a container)."""
    if isinstance(value, (tuple, list)):
        return [x for v in value for x in _flat(v)]
    return [] if value is None else [value]


def _lane_markers(item) -> list[str]:
    """The markers ``item`` gets from what it uses (see the module docstring)."""
    seen: set[int] = set()
    names, strings = _uses(item.function, seen)
    fixturedefs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    for name in item.fixturenames:
        # this module's fixtures build what the cache keeps: what they use is not the test's
        for fixturedef in (f for f in fixturedefs.get(name, ()) if f.func.__module__ != __name__):
            inner = _uses(fixturedef.func, seen)
            names |= inner[0]
            strings |= inner[1]
    marks = []
    if SERVE_TESTS in Path(item.path).parents or "ServerProcess" in names:
        marks.append("server")
    if names & BROWSER_NAMES:
        marks.append("browser")
    if names & PROCESS_NAMES:
        marks.append("subprocess")
    params = getattr(item, "callspec", None)
    params = list(params.params.values()) if params else []
    # a parameter that names a row of a table in the test's module (CASES[case]) stands for the row
    tables = [v for v in vars(item.module).values() if isinstance(v, dict)] if item.module else []
    params += [x for v in params if isinstance(v, str) for table in tables for x in _flat(table.get(v))]
    beyond_values = (set(ALL_TINY_PRESETS) - set(FAST_PRESETS)) | OTHER_FLAG_VALUES
    # checkpoints and tables are cheap: what costs is an export of another preset or target
    beyond = "exported" in item.fixturenames and (
        any(isinstance(v, Target) and v.flags != FAST_FLAGS for v in params)
        or any(isinstance(v, str) and v in beyond_values for v in params)
        or bool(strings & beyond_values)
    )
    if {"browser", "subprocess"} & set(marks) or beyond or names & EXPORT_NAMES or item.name == GUARD_TEST:
        marks.append("slow")
    return marks


def pytest_collection_modifyitems(config, items):
    skip_cuda = None if cuda_available() else pytest.mark.skip(reason="needs onnxruntime's CUDA provider and a CUDA device")
    for item in items:
        if skip_cuda is not None and "cuda" in item.keywords:
            item.add_marker(skip_cuda)
        if isinstance(item, pytest.Function):
            for mark in _lane_markers(item):
                item.add_marker(mark)
    # the guard reads what the other tests did: it runs last, or under pytest-xdist, where no worker
    # sees the others' tests, in the process that runs the session once they are done
    if _xdist_worker(config):
        guard = [item for item in items if item.name == GUARD_TEST]
        items[:] = [item for item in items if item.name != GUARD_TEST]
        config.hook.pytest_deselected(items=guard)
    items.sort(key=lambda item: item.name == GUARD_TEST)


def _xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


# Under pytest-xdist (scripts/test.sh runs it): the test files whose tests run one after another in
# one worker, in collection order; every other test goes to whichever worker is free. The Ray
# files each start clusters (a module's two-node cluster, or one per test): one at a time on a small
# machine, and none running where a test asks Ray to find this machine's cluster (--ray alone).
ONE_WORKER = {"tests/runtime/test_batch_ray.py": "ray", "tests/serve/test_ray_serve.py": "ray"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scheduling by scope (a scope's tests go to one worker, in order), with
    ``ONE_WORKER``'s files one scope and every other test a scope of its own. (xdist's own
    ``xdist_group`` marker does nothing under pytest 9: it renames node ids through an attribute
    pytest 9 no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return ONE_WORKER.get(nodeid.split("::", 1)[0], nodeid)

    return Scheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Under pytest-xdist: the guard test, judged here once every worker's reports are in."""
    if _xdist_worker(session.config) or not session.config.pluginmanager.has_plugin("dsession"):
        return
    if exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return
    from .test_guard import missing_parity, whole_suite

    if not whole_suite(session.config):
        return
    problem = missing_parity()
    path = "tests/test_guard.py"
    report = pytest.TestReport(f"{path}::{GUARD_TEST}", (path, 0, GUARD_TEST), {}, "failed" if problem else "passed", problem, "call")
    session.config.hook.pytest_runtest_logreport(report=report)
    if problem:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    params = getattr(item, "callspec", None)
    params = params.params if params else {}
    target = params.get("target")
    on_device = item.get_closest_marker("cuda") is not None
    if report.when == "setup" and on_device and isinstance(target, Target):
        report.user_properties += [(CUDA_PARITY, (m.kwargs["artifact"], target.flags)) for m in item.iter_markers("parity")]
    if report.when != "call":
        return
    if report.passed:
        for mark in item.iter_markers("parity"):
            artifact = mark.kwargs["artifact"]
            # counts only where the artifact really ran (a bf16 decoder does not on a CPU)
            if isinstance(target, Target) and (on_device or artifact in target.cpu_checkable):
                report.user_properties.append((PASSED, (artifact, target.flags, params.get("preset", "(any)"))))
    elif report.failed:
        for mark in item.iter_markers("og_behaviour"):
            report.sections.append(
                (
                    "onnxruntime-genai behaviour",
                    f"This test documents onnxruntime-genai {mark.kwargs['version']}: {mark.kwargs['what']}. "
                    "If og changed it, update the README's known limits and this test.",
                )
            )


SEED = 1234  # of every preset's checkpoint
SCRIPTED_SEED = 0


@pytest.fixture(scope="session")
def artifact_cache():
    """The on-disk cache of checkpoints and exports (None where GENAI_QWEN3VL_TEST_CACHE=off); at
    the end of the session, a test that wrote into a folder it lent fails the session."""
    cache = ArtifactCache.open()
    yield cache
    changed = cache.changed() if cache is not None else []
    if changed:
        pytest.fail(f"a test wrote into cached folders {changed} (removed now): copy a fixture's folder before changing it", pytrace=False)


def _built(cache, tmp_path_factory, kind: str, key: dict, name: str, build) -> Path:
    """``name``, the folder ``build(folder)`` writes: from the cache, or made in this session."""
    if cache is None:
        folder = tmp_path_factory.mktemp(f"{kind}_{key['preset']}") / name
        build(folder)
        return folder
    return cache.get(kind, key, name, build)


def _export(checkpoint: Path, flags: tuple[str, ...]):
    """A build function: the command line's export of ``checkpoint`` with ``flags``."""

    def build(out: Path) -> None:
        from genai_qwen3vl.cli import export_main

        rc = export_main(["-i", str(checkpoint), "-o", str(out), *flags])
        assert rc == 0, f"export of {checkpoint.name} {' '.join(flags)} failed with exit code {rc}"

    return build


def _getter(cache, make):
    """``make(*key)``, made once per session and key; each call marks the cache entry used."""
    made: dict = {}

    def get(*key):
        if key not in made:
            made[key] = make(*key)
        elif cache is not None:
            cache.touch(made[key])
        return made[key]

    return get


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory, artifact_cache):
    """preset name -> checkpoint folder (built on first use)."""

    def make(preset: str) -> Path:
        return _built(
            artifact_cache,
            tmp_path_factory,
            "checkpoint",
            {"preset": preset, "seed": SEED},
            f"ckpt_{preset}",
            lambda folder: make_tiny_checkpoint(folder, preset, seed=SEED),
        )

    return _getter(artifact_cache, make)


@pytest.fixture(scope="session")
def exported(tmp_path_factory, artifact_cache, checkpoints):
    """(preset, command-line flags) -> output folder written by the command line (default -p fp32 -e cpu)."""
    get = _getter(
        artifact_cache,
        lambda preset, flags: _built(
            artifact_cache,
            tmp_path_factory,
            "export",
            {"preset": preset, "seed": SEED, "flags": list(flags)},
            "model",
            _export(checkpoints(preset), flags),
        ),
    )

    def exported(preset: str, *flags: str) -> Path:
        return get(preset, flags or FAST_FLAGS)

    return exported


class Scripted(NamedTuple):
    checkpoint: Path  # make_scripted_checkpoint's folder
    exported: Path  # its export by the command line, -p fp32 -e cpu


@pytest.fixture(scope="session")
def scripted_checkpoint(tmp_path_factory, artifact_cache) -> Path:
    """The scripted checkpoint (genai_qwen3vl.testing.scripted.make_scripted_checkpoint): greedy after
    the Thinking generation prompt it writes SCRIPTED_OUTPUT, then <|im_end|>."""
    return _built(
        artifact_cache,
        tmp_path_factory,
        "checkpoint",
        {"preset": "scripted", "seed": SCRIPTED_SEED},
        "ckpt_scripted",
        lambda folder: make_scripted_checkpoint(folder, seed=SCRIPTED_SEED),
    )


@pytest.fixture(scope="session")
def scripted(tmp_path_factory, artifact_cache, scripted_checkpoint) -> Scripted:
    """(checkpoint, exported): the scripted checkpoint and its fp32 CPU export, built once per session."""
    key = {"preset": "scripted", "seed": SCRIPTED_SEED, "flags": list(FAST_FLAGS)}
    return Scripted(
        scripted_checkpoint, _built(artifact_cache, tmp_path_factory, "export", key, "model", _export(scripted_checkpoint, FAST_FLAGS))
    )


@pytest.fixture(scope="session")
def reference(checkpoints):
    """preset name -> transformers Reference (model fp32 eager, PIL image processor)."""
    from genai_qwen3vl.verify.reference import Reference

    cache: dict = {}

    def get(preset: str):
        if preset not in cache:
            cache[preset] = Reference.load(checkpoints(preset))
        return cache[preset]

    return get


# int4 exports checked exactly: at accuracy level 1 their graphs must equal transformers run on
# the decoder's own weights dequantized
INT4_EXACT = ("--int4_accuracy_level", "1")


def exact_flags(target: Target) -> tuple[str, ...]:
    """``target``'s command-line flags, with ``INT4_EXACT`` for a quantized one."""
    return (*target.flags, *INT4_EXACT) if target.quantized else target.flags


@pytest.fixture(scope="session")
def target_reference(exported, reference):
    """(preset, target) -> what the export with ``exact_flags(target)`` must equal: transformers
    fp32, or for int4 the same model with the int4 decoder's weights dequantized."""
    from genai_qwen3vl.verify.reference import dequantized_reference

    cache = {}

    def get(preset: str, target: Target):
        key = (preset, target.flags)
        if key not in cache:
            ref = reference(preset)
            cache[key] = dequantized_reference(ref, exported(preset, *exact_flags(target))) if target.quantized else ref
        return cache[key]

    return get


@pytest.fixture(scope="session")
def image_file(tmp_path_factory):
    """(height, width, seed) -> PNG path of ``make_picture``."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")

    def get(height: int, width: int, seed: int = 0) -> Path:
        path = folder / f"pic_{height}x{width}_{seed}.png"
        if not path.exists():
            Image.fromarray(make_picture(height, width, seed)).save(path)
        return path

    return get
