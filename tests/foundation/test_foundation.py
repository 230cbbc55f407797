"""Errors, registries, pseudonyms, hashing and the command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from medtl.cli import app
from medtl.errors import DuplicateNameError, MedTLError, PseudonymKeyError, UnknownNameError
from medtl.hashing import sha256_array
from medtl.identity import DEV_KEY_ENV, KEY_ENV, Pseudonymizer, pseudonymizer_from_env
from medtl.registry import Registry


def test_errors_say_what_where_and_what_to_do():
    error = MedTLError("the thing is broken", where="series R-1", fix="mend it")
    assert str(error) == "the thing is broken [series R-1]\n  What to do: mend it"


def test_registry_refuses_duplicates_and_suggests_near_misses():
    registry: Registry[int] = Registry("backbone")
    registry.register("resnet18", 1)
    registry.register("resnet50", 2)
    with pytest.raises(DuplicateNameError):
        registry.register("resnet18", 3)
    with pytest.raises(UnknownNameError) as caught:
        registry.get("resnet-18")
    assert "did you mean 'resnet18'" in str(caught.value)
    assert registry.names() == ["resnet18", "resnet50"] and registry.get("resnet50") == 2


def test_pseudonyms_are_keyed_stable_and_namespaced():
    site_a, site_b = Pseudonymizer(b"a" * 32), Pseudonymizer(b"b" * 32)
    assert site_a.patient("MRN1") == site_a.patient("MRN1") != site_b.patient("MRN1")
    assert site_a.patient("1.2.3")[2:] != site_a.series("1.2.3")[2:]
    assert site_a.patient("MRN1").startswith("P-") and len(site_a.patient("MRN1")) == 18
    assert "MRN1" not in site_a.patient("MRN1")
    with pytest.raises(PseudonymKeyError):
        Pseudonymizer(b"short")


def test_remembered_pseudonyms_are_the_keyed_hashes_and_stay_in_their_process(monkeypatch):
    import hashlib
    import hmac
    import pickle

    from medtl import identity

    monkeypatch.setattr(identity, "_KNOWN_MAX", 3)  # forgets and starts again past three
    site = Pseudonymizer(b"k" * 32)
    values = [f"case-{n % 5}" for n in range(20)]
    expected = {v: "F-" + hmac.new(b"k" * 32, f"file\x00{v}".encode(), hashlib.sha256).hexdigest()[:16] for v in values}
    assert [site.file(v) for v in values] == [expected[v] for v in values]
    assert site.series(values[0]) != site.file(values[0])  # the kind is part of what is remembered
    assert 0 < len(site._known) <= 3
    copy = pickle.loads(pickle.dumps(site))
    assert copy._known == {} and copy.file(values[1]) == expected[values[1]]


def test_missing_key_is_an_error_unless_the_development_key_is_chosen(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(DEV_KEY_ENV, raising=False)
    with pytest.raises(PseudonymKeyError, match="--dev-pseudonym-key"):
        pseudonymizer_from_env()
    assert pseudonymizer_from_env(allow_development_key=True).is_development
    monkeypatch.setenv(KEY_ENV, "x" * 40)
    site = pseudonymizer_from_env()
    assert not site.is_development and site.key_id != "development"


def test_array_hash_ignores_layout_but_not_shape_or_dtype():
    array = np.random.default_rng(0).random((4, 5, 6)).astype(np.float32)
    assert sha256_array(array) == sha256_array(np.asfortranarray(array))
    assert sha256_array(array) != sha256_array(array.reshape(6, 5, 4))
    assert sha256_array(array) != sha256_array(array.astype(np.float64))
    changed = array.copy()
    changed[1, 2, 3] += 1e-6
    assert sha256_array(array) != sha256_array(changed)


def test_cli_help_lists_every_command_of_the_design():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("synth", "datasets", "ingest", "train", "evaluate", "approve", "verify", "score", "demo"):
        assert command in result.output


def test_ingest_without_a_key_fails_with_instructions(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(DEV_KEY_ENV, raising=False)
    (tmp_path / "src").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "medtl.cli", "ingest", str(tmp_path / "src"), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == PseudonymKeyError.exit_code
    assert KEY_ENV in result.stderr
    assert not (tmp_path / "out").exists()


def test_verify_command_exit_code_reaches_the_shell(tmp_path):
    (tmp_path / "not-an-artifact").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "medtl.cli", "verify", str(tmp_path / "not-an-artifact")], capture_output=True, text=True
    )
    assert result.returncode == 6
    assert "manifest.json is missing" in result.stderr


def test_a_usage_error_is_a_short_message_not_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "medtl.cli", "train", "x"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Missing" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("budget", ["0", "-5", "nan"])
def test_a_budget_of_no_minutes_is_refused_before_any_planning(tmp_path, budget):
    """It once passed every probe and stopped with a traceback where the plan was recorded."""
    from medtl.errors import ConfigError

    (tmp_path / "dataset").mkdir()
    command = ["plan", str(tmp_path / "dataset"), "--budget", budget, "--out", str(tmp_path / "plan.yaml")]
    result = subprocess.run([sys.executable, "-m", "medtl.cli", *command], capture_output=True, text=True)
    assert result.returncode == ConfigError.exit_code
    assert "a time budget is a number of minutes above 0" in result.stderr and "Traceback" not in result.stderr


def test_durations_read_in_seconds_below_two_minutes_and_in_minutes_above():
    from medtl.timing import duration

    assert [duration(s) for s in (0.4, 36, 119.4, 120, 1800)] == ["0 s", "36 s", "119 s", "2.0 min", "30.0 min"]


def test_a_time_and_its_budget_read_in_one_unit():
    from medtl.timing import time_and_budget

    assert time_and_budget(80, 126) == ("1.3 min", "2.1 min")
    assert time_and_budget(126, 104) == ("2.1 min", "1.7 min")
    assert time_and_budget(80, 104) == ("80 s", "104 s")
    assert time_and_budget(80, None) == ("80 s", None)


def test_a_progress_bar_takes_a_total_that_changes_on_the_way():
    """A budget may shorten a schedule after its first epoch: the bar then ends at the new total, not at 8%."""
    from medtl.progress import Progress

    with Progress(True) as bar:
        bar.update("epoch 1/100", 1, 100)
        bar.update("epoch 8/8", 8, 8)
        (task,) = bar._bar.tasks
        assert (task.completed, task.total, task.description) == (8, 8, "epoch 8/8")
