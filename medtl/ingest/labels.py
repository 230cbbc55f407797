"""Read the clinicians' labels file and join it to scans by patient, study and series.

Nothing is guessed: a row that matches no scan, a duplicate, or two rows that disagree about one scan are reported
by row number; a scan without a label stays unlabelled (usable for scoring, never for training). Extra columns such
as names or birth dates are ignored and never copied anywhere.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medtl.contracts import LabelRow, validate_rows
from medtl.contracts.ingest import LabelsSummary
from medtl.contracts.ingest_state import ScanState
from medtl.contracts.labels import KNOWN_COLUMNS
from medtl.errors import ContractProblem, DataContractError, LabelsError
from medtl.identity import Pseudonymizer

_FIRST_DATA_ROW = 2  # row 1 of the CSV is the header; rows are reported as a spreadsheet shows them


@dataclass
class LabelTable:
    rows: list[LabelRow]
    ignored_columns: list[str]
    duplicate_rows: list[int] = field(default_factory=list)

    def row_number(self, index: int) -> int:
        return index + _FIRST_DATA_ROW


@dataclass(frozen=True)
class ScanKeys:
    """The raw identifiers of one scan, used only inside ingest to find its label."""

    patient_id: str
    study_uid: str | None
    accession_number: str | None
    series_uid: str | None


@dataclass
class LabelMatch:
    label: str | None
    split: str | None
    site: str | None
    rows: list[int]
    conflict: bool = False


def read_labels(path: Path) -> LabelTable:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        problem = ContractProblem("file", "does not exist")
        raise LabelsError("labels.v1.schema.json", [problem], where="labels") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise LabelsError(
            "labels.v1.schema.json", [ContractProblem("file", f"not a readable CSV ({type(error).__name__})")]
        ) from None
    frame.columns = [str(column).strip() for column in frame.columns]
    missing = [column for column in ("patient_id", "label") if column not in frame.columns]
    if missing:
        raise LabelsError(
            "labels.v1.schema.json",
            [ContractProblem("header", f"required column {name!r} is missing") for name in missing],
            where="labels file",
            fix="the labels CSV needs at least the columns patient_id and label (see data_contracts/README.md)",
        )
    ignored = [column for column in frame.columns if column not in KNOWN_COLUMNS]
    known = frame[[column for column in frame.columns if column in KNOWN_COLUMNS]]
    records = [{k: (v if v != "" else None) for k, v in row.items()} for row in known.to_dict(orient="records")]
    try:
        rows = validate_rows(LabelRow, records, where="labels file", first_row_number=_FIRST_DATA_ROW)
    except DataContractError as error:
        # Cells hold patient ids and labels: the error names row and column only, never the cell's content.
        problems = [ContractProblem(p.location, p.rule) for p in error.problems]
        raise LabelsError(
            "labels.v1.schema.json",
            problems,
            where="labels file",
            fix="correct the listed cells (row numbers as a spreadsheet shows them; see data_contracts/README.md)",
        ) from None
    table = LabelTable(rows, ignored)
    seen: dict[tuple, int] = {}
    for index, row in enumerate(rows):
        key = (row.patient_id, row.study_id, row.series_id)
        if key in seen:
            table.duplicate_rows.append(table.row_number(index))
        else:
            seen[key] = index
    return table


def keyed_labels(table: LabelTable, pseudonymizer: Pseudonymizer) -> LabelTable:
    """The table with its patient, study and series cells replaced by keyed hashes.

    Scans are joined by the keyed hashes of their identifiers (ingest_state.json keeps them), so a re-run can join
    an edited labels file to scans it did not read again; equal values hash equally, so the join is the same.
    Study cells hash in the study namespace, as both StudyInstanceUIDs and accession numbers do.
    """
    rows = [
        row.model_copy(
            update={
                "patient_id": pseudonymizer.patient(row.patient_id),
                "study_id": pseudonymizer.study(row.study_id) if row.study_id is not None else None,
                "series_id": pseudonymizer.series(row.series_id) if row.series_id is not None else None,
            }
        )
        for row in table.rows
    ]
    return LabelTable(rows, table.ignored_columns, table.duplicate_rows)


class LabelIndex:
    """Finds the rows that apply to a scan; the most specific level (series > study > patient) wins."""

    def __init__(self, table: LabelTable) -> None:
        self.table = table
        self._by_patient: dict[str, list[int]] = defaultdict(list)
        for index, row in enumerate(table.rows):
            self._by_patient[row.patient_id].append(index)
        self.used: set[int] = set()

    def match(self, keys: ScanKeys) -> LabelMatch | None:
        candidates = []
        for index in self._by_patient.get(keys.patient_id, []):
            row = self.table.rows[index]
            if row.study_id is not None and row.study_id not in (keys.study_uid, keys.accession_number):
                continue
            if row.series_id is not None and row.series_id != keys.series_uid:
                continue
            specificity = (row.series_id is not None) * 2 + (row.study_id is not None)
            candidates.append((specificity, index))
        if not candidates:
            return None
        best = max(specificity for specificity, _ in candidates)
        chosen = [index for specificity, index in candidates if specificity == best]
        self.used.update(index for _, index in candidates)
        rows = [self.table.rows[i] for i in chosen]
        numbers = [self.table.row_number(i) for i in chosen]
        labels = {row.label for row in rows}
        if len(labels) > 1:
            return LabelMatch(None, None, None, numbers, conflict=True)
        splits = {row.split for row in rows if row.split}
        sites = {row.site for row in rows if row.site}
        conflict = len(splits) > 1 or len(sites) > 1
        return LabelMatch(
            None if conflict else rows[0].label,
            splits.pop() if len(splits) == 1 else None,
            sites.pop() if len(sites) == 1 else None,
            numbers,
            conflict=conflict,
        )

    def unmatched_rows(self) -> list[int]:
        return [self.table.row_number(i) for i in range(len(self.table.rows)) if i not in self.used]


def labels_summary(
    index: LabelIndex | None, table: LabelTable, rows: list[dict], conflicting_rows: list[int]
) -> LabelsSummary:
    unmatched = index.unmatched_rows() if index is not None else []
    return LabelsSummary(
        n_rows=len(table.rows),
        n_rows_matched=len(table.rows) - len(unmatched),
        unmatched_rows=unmatched,
        duplicate_rows=table.duplicate_rows,
        conflicting_rows=conflicting_rows,
        unlabelled_scans=sorted(row["scan_id"] for row in rows if row.get("label") is None),
        ignored_columns=table.ignored_columns,
    )


def join_labels(rows: list[dict[str, Any]], scans: list[ScanState], index: LabelIndex | None) -> list[int]:
    """Join every scan, fresh or carried over, to the labels by its keyed ids; returns the conflicting rows."""
    if index is None:
        return []
    conflicts: list[int] = []
    keys = {scan.scan_id: scan for scan in scans}
    for row in rows:
        scan = keys[row["scan_id"]]
        match = index.match(ScanKeys(scan.patient_key, scan.study_key, scan.accession_key, scan.series_key))
        if match is not None and match.conflict:
            conflicts.extend(match.rows)
        row["site"] = match.site if match else None
        row["label"] = match.label if match else None
        row["split"] = match.split if match else None
    return sorted(set(conflicts))
