"""`medtl demo --out DIR` replaces its own earlier output and nothing else: a folder it did not make is refused
before anything is removed, and the user's files in it are left exactly as they were."""

from __future__ import annotations

import pytest

from medtl.demo import prepare_demo
from medtl.errors import ConfigError
from medtl.outputs import MARKER


def _tree(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_rerun_replaces_its_own_output_but_refuses_a_folder_it_did_not_make(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDTL_SIGNING_KEY", raising=False)
    out = tmp_path / "demo"
    plan = prepare_demo(out, patients=12, seed=0, epochs=1)
    assert all((out / folder / MARKER).is_file() for folder in ("source", "target", "incoming", "scores", "settings"))
    (out / "scores" / "stale.parquet").write_bytes(b"an earlier demo run's scores")
    (out / "mine").mkdir()
    (out / "mine" / "notes.txt").write_text("the user's own folder beside the demo's\n")
    key = plan.signing_key_made.read_bytes()

    prepare_demo(out, patients=12, seed=0, epochs=1)  # its own earlier output: replaced
    assert not (out / "scores" / "stale.parquet").exists()
    assert (out / "mine" / "notes.txt").exists() and plan.signing_key_made.read_bytes() == key

    (out / "scores" / MARKER).unlink()  # as if the user had made DIR/scores: the demo did not
    (out / "scores" / "results.csv").write_text("a user's results\n")
    before = _tree(out)
    with pytest.raises(ConfigError, match="holds files medtl did not write") as refused:
        prepare_demo(out, patients=12, seed=0, epochs=1)
    assert "scores" in str(refused.value) and "another output folder" in str(refused.value)
    assert _tree(out) == before  # nothing removed or written, in that folder or in the demo's own ones


def test_a_foreign_file_where_a_demo_folder_goes_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDTL_SIGNING_KEY", raising=False)
    out = tmp_path / "demo"
    out.mkdir()
    (out / "incoming").write_text("a file, not a folder\n")
    with pytest.raises(ConfigError, match="not a folder medtl made"):
        prepare_demo(out, patients=12, seed=0, epochs=1)
    assert sorted(p.name for p in out.iterdir()) == ["incoming"]
