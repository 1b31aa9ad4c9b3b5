"""Shared pytest fixtures."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

try:  # pragma: no cover - depends on the install
    # The first torch optimiser imports torch._dynamo and with it triton, whose LLVM
    # crashes the process once a napari viewer has made a GL context under Xvfb (the
    # docks train in a child process for this reason). Tests that build optimisers
    # in-process run in any order with the viewer tests, so import it before any viewer.
    import torch._dynamo  # noqa: F401
except ImportError:
    pass

#: Exit status of the test session, kept for :func:`pytest_unconfigure`.
_SESSION: dict[str, int] = {}


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remember the session's exit status."""
    _SESSION["exitstatus"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the process with the session's exit status once pytest has reported everything.

    The interpreter's own teardown (static destructors of the Qt, GL and LLVM
    libraries loaded by the viewer and torch tests under Xvfb) has segfaulted
    after a fully passed and reported run, without a Python traceback, in two
    of about twenty CI runs; skipping it keeps a green run green. Runs last, so
    every plugin has finished, and runs the ``atexit`` handlers first
    (pytest-xvfb stops its display in one). Set ``NSD_TESTS_FULL_EXIT=1`` to
    let the interpreter tear down as usual.
    """
    if "exitstatus" in _SESSION and not os.environ.get("NSD_TESTS_FULL_EXIT"):
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_SESSION["exitstatus"])


#: The repository's root.
ROOT = Path(__file__).resolve().parents[1]
#: Test data shared by the project, next to the repository (see ``shared/data/SOURCES.md``).
SHARED = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared test-data folder (``formats/``, ``real/``); skip when it is missing."""
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not found at {SHARED}")
    return SHARED


@pytest.fixture
def load_script():
    """Import one of the repository's ``scripts/NAME.py`` as a module (they are not a package)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def coarse_potential_grid(monkeypatch):
    """Multislice twins on a 0.09 Å potential grid instead of the converged 0.03 Å one (a tenth of the time).

    For the tests of what a multislice twin writes (tables, files, index); the grid's own accuracy
    is tested on tiny lattices in ``test_multislice.py``.
    """
    from napari_stem_defects.simulate import multislice

    monkeypatch.setattr(multislice, "potential_sampling_A", lambda energy_kV, outer_mrad: 0.09)
