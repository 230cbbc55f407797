"""Fixtures shared by every test area."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from support.environment import environment_restored

REPO = Path(__file__).resolve().parents[1]
# Tests run in parallel processes (pytest-xdist, `-n auto`): each gets its share of the cores for its intra-op
# threads, and so do the processes it starts (the CLI, Dask workers), or they would all contend for every core.
# Set before anything imports torch; a value given by the caller stands.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))
# The user's own weight pins and pretrained-artifact index must not change what the tests plan or load.
os.environ["MEDTL_HOME"] = tempfile.mkdtemp(prefix="medtl-home-")
atexit.register(shutil.rmtree, os.environ["MEDTL_HOME"], ignore_errors=True)  # one per test process: not left behind


def shared_data_root() -> Path | None:
    """Real medical images beside the repository (or at MEDTL_SHARED_DATA); absent on a user's fresh clone."""
    configured = os.environ.get("MEDTL_SHARED_DATA")
    root = Path(configured) if configured else REPO.parent / "shared" / "data"
    return root if root.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("shared data folder not present (set MEDTL_SHARED_DATA to its location)")
    return root


KEY_VARIABLES = ("MEDTL_SIGNING_KEY", "MEDTL_TRUSTED_KEYS", "MEDTL_APPROVER_KEYS", "MEDTL_REVIEWER_KEY")


@pytest.fixture(autouse=True)
def key_variables_stay_in_their_test():
    """The demo points this process's key variables at its own folder, as the command should; they are put back after
    every test, or a later test would sign with a key file removed with an earlier test's folder. (monkeypatch.delenv
    of an unset variable records nothing, so it cannot undo a variable the code under test sets.)"""
    with environment_restored(KEY_VARIABLES):
        yield
