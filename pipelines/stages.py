"""Content-keyed stage records: a re-run of the end-to-end flow skips a stage whose inputs have not changed.

Why not Prefect's own result cache: it lives in the Prefect home or server, keyed apart from the outputs, so it
cannot see that someone deleted or edited a dataset folder or an artifact. Here the record sits beside the outputs
(`stages.json` in the flow's work folder) and a stage counts as done only when the content key of its inputs matches
AND its outputs are still there. Keys hash content (file bytes, the dataset's manifest hash, the artifact's sealed
manifest), never paths, so a moved export with the same bytes is recognised and an edited file is not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

RECORD = "stages.json"
_CHUNK = 1 << 20


def _update_with_file(digest: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)


def content_key(*, files: Iterable[Path] = (), trees: Iterable[Path] = (), values: Iterable[object] = ()) -> str:
    """sha256 over the bytes of FILES, every file under TREES (with its path relative to the tree) and VALUES."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(b"file\0")
        _update_with_file(digest, Path(path))
    for tree in trees:
        tree = Path(tree)
        members = [tree] if tree.is_file() else sorted(p for p in tree.rglob("*") if p.is_file())
        digest.update(b"tree\0")
        for member in members:
            digest.update(member.relative_to(tree).as_posix().encode() + b"\0" if member != tree else b"\0")
            _update_with_file(digest, member)
    digest.update(json.dumps(list(values), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def sealed_digest(folder: Path, name: str) -> str:
    """Hash of a stage's sealing file: the dataset's fingerprint.json or the artifact's manifest.json."""
    digest = hashlib.sha256()
    _update_with_file(digest, Path(folder) / name)
    return digest.hexdigest()


def is_done(workdir: Path, stage: str, key: str, outputs: Iterable[Path]) -> bool:
    record = _read(workdir)
    return record.get(stage) == key and all(Path(path).exists() for path in outputs)


def mark_done(workdir: Path, stage: str, key: str) -> None:
    record = _read(workdir)
    record[stage] = key
    path = Path(workdir) / RECORD
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True), encoding="utf-8")
    temporary.replace(path)


def _read(workdir: Path) -> dict[str, str]:
    path = Path(workdir) / RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
