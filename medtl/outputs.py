"""Folders medtl may replace or delete: only those it made itself, recognised by a marker file it writes in them.

Why: some outputs are rebuilt from scratch on every run (the demo's cohorts and results, a PACS pull's staging
folder), so the previous copy must go first. A user may point `--out` at a folder that already holds their own files
-- a typo, or a folder that happens to share the name. Removing whatever sits there would delete their data, so a
folder is removed or replaced only when its marker says this kind of medtl output made it; anything else is refused
with instructions, and nothing is touched.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from medtl.errors import ConfigError

MARKER = ".medtl-output.json"


def made_by(folder: Path, owner: str) -> bool:
    """Whether FOLDER carries OWNER's marker (a marker of another kind of output does not count)."""
    marker = Path(folder) / MARKER
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("owner") == owner
    except (OSError, ValueError, AttributeError):
        return False


def clear_for(folder: Path, *, owner: str, what: str, dry_run: bool = False) -> None:
    """Make room for OWNER's new output at FOLDER: absent or empty is fine, OWNER's earlier output is removed,
    anything else (a file, a folder with files medtl did not put there) is refused and left as it is. `dry_run`
    only checks, so that several folders can all be checked before any is removed."""
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ConfigError(
            f"cannot write {what}: the path exists and is not a folder medtl made", where=str(folder),
            fix="move it away or choose another output folder; medtl removes only folders it made itself",
        )  # fmt: skip
    if not folder.exists() or not any(folder.iterdir()):
        return
    if not made_by(folder, owner):
        raise ConfigError(
            f"cannot write {what}: the folder holds files medtl did not write (there is no {MARKER} from {owner})",
            where=str(folder),
            fix="choose another output folder, or move those files away yourself; medtl replaces only its own "
            "earlier output and never deletes anything else",
        )
    if not dry_run:
        shutil.rmtree(folder)


def mark(folder: Path, *, owner: str) -> Path:
    """Create FOLDER if needed and sign it as OWNER's output, so a later run may replace it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    stamp = {"owner": owner, "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
    marker.write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    return folder


def remove_if_made_by(folder: Path, owner: str) -> bool:
    """Remove FOLDER when OWNER made it (its marker says so); otherwise leave it. Returns whether it was removed."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir() or not made_by(folder, owner):
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


@contextmanager
def staged_folder(out: Path, *, what: str) -> Iterator[Path]:
    """A hidden folder beside OUT to write into. When the block succeeds it takes OUT's name (an empty OUT is
    replaced; one that holds anything by now is refused, never replaced); when anything fails it is removed. So OUT
    appears whole or not at all."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:12]}"
    staged.mkdir()  # not mkdtemp: the output keeps the usual permissions (others may read it from their account)
    try:
        yield staged
        if out.exists():
            if not out.is_dir() or any(out.iterdir()):
                raise ConfigError(
                    f"{what} {out.name} appeared while this one was being written; nothing was replaced",
                    where=str(out),
                    fix="choose a new output folder; the one written meanwhile stays as it is",
                )
            out.rmdir()  # empty (checked just above); rmdir refuses if a file arrived since
        staged.rename(out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
