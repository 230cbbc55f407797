"""What every PACS source does, whatever the protocol: find series, retrieve one to a folder, store results back.

Queries go study level first (dates, modality, accession / UID), then series level inside each study: the
standard Study Root model, which every PACS answers, unlike relational series queries across studies. Network
calls retry with exponential backoff on transient failures only (refused, reset, timed out, 502/503/504); a
refusal of our credentials or a failure that names one series is not retried here (see pull.py for series).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Protocol, TypeVar

import pydicom
from pydicom.dataset import Dataset
from tenacity import Retrying, before_sleep_log, retry_if_exception_type, stop_after_attempt, wait_exponential

from medtl.errors import SourceAuthError, SourceError, SourceUnavailableError
from medtl.sources.location import SourceLocation
from medtl.sources.query import PacsQuery, RemoteSeries, read_id_list, study_key

log = logging.getLogger(__name__)
T = TypeVar("T")
STUDY_FIELDS = ("StudyInstanceUID", "StudyDate", "AccessionNumber", "ModalitiesInStudy")
SERIES_FIELDS = ("SeriesInstanceUID", "Modality", "BodyPartExamined", "SeriesDescription",
                 "NumberOfSeriesRelatedInstances")  # fmt: skip


@dataclass(frozen=True)
class RetryPolicy:
    """Tries per network call; waits grow base, 2*base, 4*base ... up to max_delay seconds."""

    attempts: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0


class Transient(Exception):
    """A network failure worth another try; carries a PHI-free reason (no URLs: they hold UIDs)."""


class SeriesFailed(SourceError):
    """The PACS answers but cannot deliver this series (missing file, decode error on its side, 404)."""


class StudyFilter(Protocol):
    """What a scheduled run tells a query about studies: which to leave out, and where to report a failing one."""

    def skip(self, key: str) -> bool: ...

    def failed(self, key: str, reason: str) -> None: ...

    def listed(self, key: str) -> None: ...


class RemoteSource(ABC):
    """A PACS. Subclasses speak the protocol; this class owns the query strategy and the retries."""

    def __init__(self, location: SourceLocation, retry: RetryPolicy | None = None) -> None:
        self.location = location
        self.retry = retry or RetryPolicy()

    @abstractmethod
    def _ping(self) -> None:
        """One cheap request that proves the PACS answers and accepts us; raises Transient or SourceAuthError."""

    @abstractmethod
    def _find(self, level: str, filters: dict[str, str], fields: Sequence[str], study_uid: str | None) -> list[Dataset]:
        """C-FIND / QIDO-RS at LEVEL ('STUDY' or 'SERIES'); raises Transient for network trouble."""

    @abstractmethod
    def _retrieve(self, series: RemoteSeries, folder: Path) -> int:
        """Write the series' instances into FOLDER one by one as they arrive; return bytes written."""

    @abstractmethod
    def _store(self, datasets: Sequence[Dataset]) -> None:
        """Send result objects (DICOM SR, encapsulated PDF) to the PACS."""

    @contextmanager
    def retrieving(self) -> Iterator[None]:
        """A stretch of retrievals that may share one connection (DIMSE: one association for many series, as
        negotiating one costs about as much as receiving a small series); closed when the stretch ends, so that
        nothing stays open while a caller works on what was received."""
        yield

    def ping(self) -> None:
        self._with_retries(self._ping, "reach the PACS")

    def answers(self) -> bool:
        """One try, no retries: tells a PACS that is down from a series that it cannot deliver."""
        try:
            self._ping()
        except Exception:  # whatever the failure, the PACS did not answer
            return False
        return True

    def find_series(
        self, query: PacsQuery, *, today: date | None = None, studies_to_skip: StudyFilter | None = None
    ) -> list[RemoteSeries]:
        """Every series matching QUERY, each once, in a stable order (study date, then UIDs).

        With STUDIES_TO_SKIP (scheduled runs), a study whose series the PACS cannot list is reported to it and left
        out instead of failing the whole run, and studies it names (quarantined ones) are not asked about again."""
        studies = self._studies(query, today)
        series_filters = {"Modality": query.modality} if query.modality else {}
        found: dict[str, RemoteSeries] = {}
        for study in studies:
            key = study_key(str(study.StudyInstanceUID))
            if studies_to_skip is not None and studies_to_skip.skip(key):
                continue
            try:
                answers = self._with_retries(
                    lambda uid=study.StudyInstanceUID: self._find("SERIES", series_filters, SERIES_FIELDS, uid),
                    "query series",
                )
            except (SourceAuthError, SourceUnavailableError):
                raise  # the PACS as a whole: no study is to blame
            except SourceError as error:
                if studies_to_skip is None:
                    raise
                studies_to_skip.failed(key, f"its series could not be listed: {error.what}")
                continue
            if studies_to_skip is not None:
                studies_to_skip.listed(key)
            for answer in answers:
                series = _remote_series(study, answer)
                if series.series_uid and query.matches(series, today):
                    found.setdefault(series.series_uid, series)
        return sorted(found.values(), key=lambda s: (s.study_date or "", s.study_uid, s.series_uid))

    def retrieve_series(self, series: RemoteSeries, folder: Path) -> int:
        folder.mkdir(parents=True, exist_ok=True)

        def attempt() -> int:
            for leftover in folder.iterdir():  # a broken earlier try leaves part of the series
                leftover.unlink()
            size = self._retrieve(series, folder)
            received = sum(1 for _ in folder.iterdir())
            if series.n_instances is not None and received < series.n_instances:
                # A PACS can end a WADO-RS stream early without an error status (seen when a stored file is
                # missing on its side): count, or a partial series would pass as whole.
                raise SeriesFailed(f"received {received} of the {series.n_instances} instances the PACS listed",
                                   where=series.key)  # fmt: skip
            return size

        return self._with_retries(attempt, f"retrieve series {series.key}")

    def store(self, files: Sequence[Path]) -> None:
        if files:
            datasets = [pydicom.dcmread(path) for path in files]
            self._with_retries(lambda: self._store(datasets), f"store {len(datasets)} result object(s)")

    def _studies(self, query: PacsQuery, today: date | None) -> list[Dataset]:
        if query.id_list is not None:
            ids = read_id_list(query.id_list)
            studies = [self._study_by("StudyInstanceUID", uid) for uid in ids.study_uids]
            studies += [self._study_by("AccessionNumber", accession) for accession in ids.accessions]
            missing = sum(study is None for study in studies)
            if missing:
                log.warning("%d of %d listed studies are not in the PACS", missing, len(studies))
            unique = {study.StudyInstanceUID: study for study in studies if study is not None}
            return list(unique.values())
        filters = {}
        if (dates := query.dicom_date_range(today)) is not None:
            filters["StudyDate"] = dates
        if query.modality:
            filters["ModalitiesInStudy"] = query.modality
        return self._with_retries(lambda: self._find("STUDY", filters, STUDY_FIELDS, None), "query studies")

    def _study_by(self, keyword: str, value: str) -> Dataset | None:
        answers = self._with_retries(lambda: self._find("STUDY", {keyword: value}, STUDY_FIELDS, None), "query a study")
        exact = [a for a in answers if str(getattr(a, keyword, "")) == value]  # no wildcard surprises
        return exact[0] if exact else None

    def _with_retries(self, call: Callable[[], T], what: str) -> T:
        policy = self.retry
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(policy.attempts),
                wait=wait_exponential(multiplier=policy.base_delay, max=policy.max_delay),
                retry=retry_if_exception_type(Transient),
                before_sleep=before_sleep_log(log, logging.WARNING),
                reraise=True,
            ):
                with attempt:
                    return call()
        except Transient as error:
            raise SourceUnavailableError(
                f"could not {what}: {error} (after {policy.attempts} tries)",
                where=self.location.display,
                fix="check that the PACS is up and reachable from this machine; run again later: work already "
                "pulled and processed is recorded, so the next run resumes where this one stopped",
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover - Retrying either returns or raises


def _remote_series(study: Dataset, series: Dataset) -> RemoteSeries:
    def text(dataset: Dataset, keyword: str) -> str | None:
        value = getattr(dataset, keyword, None)
        return str(value) if value not in (None, "") else None

    count = text(series, "NumberOfSeriesRelatedInstances")
    return RemoteSeries(
        study_uid=str(study.StudyInstanceUID),
        series_uid=text(series, "SeriesInstanceUID") or "",
        modality=text(series, "Modality"),
        study_date=text(series, "StudyDate") or text(study, "StudyDate"),
        body_part=text(series, "BodyPartExamined"),
        description=text(series, "SeriesDescription"),
        accession=text(study, "AccessionNumber"),
        n_instances=int(count) if count and count.isdigit() else None,
    )
