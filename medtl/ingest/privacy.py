"""The only place where real identifiers and paths are written: the dataset's `private/` folder.

Outputs refer to files by a keyed id and to patients by pseudonyms. A site still needs to find the file behind a
quarantine entry, and the artifact's PHI gate needs to know what to look for; both live in `private/`, which stays
at the site like the source images themselves and is never copied into artifacts, reports or logs.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from itertools import chain, repeat
from operator import itemgetter
from pathlib import Path

from pydantic_core import to_json

from medtl.contracts.base import atomic_write_bytes
from medtl.contracts.ingest import FileRecordValues
from medtl.identity import Pseudonymizer
from medtl.ingest.discover import InputFile
from medtl.ingest.labels import LabelTable

PRIVATE_DIR = "private"
_INDEX_HEADER = ("file_id", "source_index", "relative_path", "status")
_NEEDS_QUOTING = re.compile(r'[,"\r\n]')  # what makes the csv module quote a field (its default dialect)
_README = """This folder holds protected health information (PHI): original file paths and the identifiers found in the
input headers. It stays at the site, like the source images. medtl never copies it into manifests, artifacts,
reports or logs; the artifact PHI gate reads phi_terms.json to make sure of that.

source_index.csv  file_id (as used in ingest_report.json) -> source number, original relative path, status
phi_terms.json    names, ids, birth dates, accession numbers and paths seen during ingest
"""


class PrivateRecords:
    def __init__(self, out: Path, pseudonymizer: Pseudonymizer) -> None:
        self.out = Path(out)
        self.pseudonymizer = pseudonymizer
        self._index: dict[str, tuple[int, str]] = {}
        self._terms: dict[str, set[str]] = {
            "patient_names": set(),
            "patient_ids": set(),
            "birth_dates": set(),
            "accession_numbers": set(),
            "paths": set(),
        }
        self._status: dict[str, str] = {}

    def file_id(self, file: InputFile) -> str:
        """The keyed id of the file's place; the one its listing gave it where it has one."""
        return file.file_id or self.pseudonymizer.file(f"{file.source_index}/{file.relative}")

    def register(self, file: InputFile) -> None:
        self._index[self.file_id(file)] = (file.source_index, file.relative)
        self._terms["paths"].add(file.relative)
        header = file.header
        if header is None:
            return
        for kind, value in (
            ("patient_names", header.patient_name),
            ("patient_ids", header.patient_id),
            ("birth_dates", header.birth_date),
            ("accession_numbers", header.accession_number),
        ):
            if value:
                self._terms[kind].add(value)

    def keep(self, kept: Iterable[tuple[str, int, str, str]]) -> None:
        """Files an incremental run did not read, as (file id, source index, relative path, last status): indexed
        under their last fate (their header terms are carried). All at once: a re-run keeps most of an archive."""
        kept = list(kept)
        self._index.update((file_id, (index, relative)) for file_id, index, relative, _ in kept)
        self._terms["paths"].update(relative for _, _, relative, _ in kept)
        self._status.update((file_id, status) for file_id, _, _, status in kept)

    def restatus(self, file_id: str, status: str) -> None:
        """A recorded file's fate changed after it was recorded (its scan failed preprocessing)."""
        self._status[file_id] = status

    def carry_terms(self) -> None:
        """Keep the identifiers the last run found: files not read again still hold them (a superset is safe)."""
        try:
            payload = json.loads((self.out / PRIVATE_DIR / "phi_terms.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return
        for kind, values in payload.items() if isinstance(payload, dict) else ():
            if kind in self._terms and isinstance(values, list):
                self._terms[kind].update(str(value) for value in values)

    def add_identifiers(self, patient_id: str, accession_number: str | None) -> None:
        """Identifiers that did not come from a DICOM header (NIfTI folder names, sidecars)."""
        self._terms["patient_ids"].add(patient_id)
        if accession_number:
            self._terms["accession_numbers"].add(accession_number)

    def record(
        self,
        file: InputFile,
        status: str,
        reason_code: str | None,
        reason: str | None,
        *,
        sha256: str | None = None,
        series_id: str | None = None,
        scan_ids: Sequence[str] = (),
    ) -> FileRecordValues:
        """The file's record, not validated yet: FileRecords.checked validates a run's records together."""
        file_id = self.file_id(file)
        self._status[file_id] = status
        return FileRecordValues(
            file_id, file.source_index, file.size, sha256, status, reason_code, reason, series_id, list(scan_ids)
        )

    def _source_index(self) -> str:
        """source_index.csv's text, as the csv module writes it. Joined in one pass where no path needs quoting
        (the usual case): an archive lists every file here, and the csv module's writer took ~1 us a row."""
        listed = sorted(self._index.items(), key=itemgetter(1))
        ids = list(map(itemgetter(0), listed))
        places = list(map(itemgetter(1), listed))
        relatives = list(map(itemgetter(1), places))
        statuses = list(map(self._status.get, ids, repeat("")))
        if _NEEDS_QUOTING.search("\0".join(relatives)):  # a path with a comma, quote or line break
            buffer = io.StringIO()
            writer = csv.writer(buffer)
            writer.writerow(_INDEX_HEADER)
            writer.writerows(zip(ids, map(itemgetter(0), places), relatives, statuses, strict=True))
            return buffer.getvalue()
        lines = map(",".join, zip(ids, map(str, map(itemgetter(0), places)), relatives, statuses, strict=True))
        return "".join(map("{}\r\n".format, chain([",".join(_INDEX_HEADER)], lines)))

    def write(self, sources: Sequence[Path], labels: LabelTable | None) -> None:
        folder = self.out / PRIVATE_DIR
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "README.txt").write_text(_README, encoding="utf-8")
        atomic_write_bytes(folder / "source_index.csv", self._source_index().encode("utf-8"))
        terms = {kind: set(values) for kind, values in self._terms.items()}
        terms["paths"].update(str(Path(source).resolve()) for source in sources)
        if labels is not None:
            terms["patient_ids"].update(row.patient_id for row in labels.rows)
        payload = {kind: sorted(values) for kind, values in terms.items()}
        # pydantic's serializer: the standard library's indented encoder is pure Python, and the paths of an
        # archive's files are most of the terms
        atomic_write_bytes(folder / "phi_terms.json", to_json(payload, indent=1))
