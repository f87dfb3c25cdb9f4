import functools
import json
import os
from pathlib import Path

import jax
import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
CASES = ("ouro-tiny", "huginn-tiny", "ouro-tiny-bf16-sharded")
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())["cases"]


@functools.lru_cache(maxsize=None)
def expected(case: str) -> dict:
    with np.load(FIXTURES / case / "expected.npz") as npz:
        return {k: npz[k] for k in npz.files}


def model_type(case: str) -> str:
    return MANIFEST[case]["model"]


@pytest.fixture(params=["fp32", "fp64"])
def precision(request):
    """Runs the test in float32 and again with jax x64 on (float64 arithmetic)."""
    with jax.enable_x64(request.param == "fp64"):
        yield request.param


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    """Tune malloc as the CLI does (XLA's large temporaries reuse freed heap memory instead of faulting in
    fresh pages). Imported here, after pytest installed its unraisable-exception hook, so that loopjax.cli's
    hook (a Ctrl-C lost in a gc callback, test_faults.py) wraps pytest's and not the other way round."""
    from loopjax.cli.session import tune_malloc
    tune_malloc()


def pytest_collection_modifyitems(config, items):
    """Tests marked `device` need an accelerator: they run where jax's default backend is a GPU or TPU."""
    if jax.default_backend() == "cpu":
        skip = pytest.mark.skip(reason="needs an accelerator (jax.default_backend() is cpu)")
        for item in items:
            if "device" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory):
    """No persistent XLA cache in the test session or the CLI's subprocess runs (LOOPJAX_COMPILE_CACHE=0;
    a user's own setting is restored afterwards). The session used to share one: once an in-process CLI
    test had enabled it, every later compilation of the pytest process was written to it, and with jaxlib
    0.10 on CPU the process died with SIGSEGV inside jax's cache write (compilation_cache.
    put_executable_and_time, seen in test_sublayers), which is also why `make test` runs two processes."""
    old = os.environ.get("LOOPJAX_COMPILE_CACHE")
    os.environ["LOOPJAX_COMPILE_CACHE"] = "0"
    yield
    if old is None:
        os.environ.pop("LOOPJAX_COMPILE_CACHE", None)
    else:
        os.environ["LOOPJAX_COMPILE_CACHE"] = old


class _RandomModels(dict):
    def __missing__(self, name):
        import loopjax

        self[name] = loopjax.load(f"builtin:{name}-random")  # the random built-ins: (preset, seed 0)
        return self[name]


@pytest.fixture(scope="module")
def models():
    """models["ouro-tiny"] / models["huginn-tiny"]: the random built-ins, loaded on first use."""
    return _RandomModels()


VOLATILE = {"timestamps", "timing", "seconds", "results_dir", "started", "finished", "software"}


def numbers(obj):
    """A results JSON without the fields that legitimately differ between runs (times, paths, versions)."""
    if isinstance(obj, dict):
        return {k: numbers(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [numbers(v) for v in obj]
    return obj
