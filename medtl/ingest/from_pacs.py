"""Ingest a training cohort straight from a PACS: query (typically an accession list), pull, ingest, clean up.

The series are staged under the dataset folder only for the time ingest reads them: the decoded scans live on in
ingest's cache, the staged DICOM files are deleted afterwards. A cohort larger than the staging limit stops with a
clear error before ingest starts (ingest needs the whole cohort at once to choose one preprocessing spec). Series
the PACS could not deliver are listed in pull_report.json with their reasons, beside ingest's own report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medtl.contracts import PreprocessingSpec, write_json
from medtl.contracts.pull import PulledFailure, PullReport
from medtl.errors import IngestError
from medtl.identity import Pseudonymizer
from medtl.ingest.pipeline import IngestResult, ingest_sources
from medtl.io.limits import IngestLimits
from medtl.sources.location import SourceLocation
from medtl.sources.pull import GIB, Puller, open_remote
from medtl.sources.query import PacsQuery
from medtl.sources.remote import RetryPolicy

PULL_REPORT = "pull_report.json"


@dataclass
class PacsIngestResult:
    ingest: IngestResult
    series_found: int
    series_pulled: int
    failed: list[tuple[str, str]]

    def describe(self) -> str:
        failed = f"; {len(self.failed)} could not be retrieved (see {PULL_REPORT})" if self.failed else ""
        return f"pulled {self.series_pulled} of {self.series_found} series{failed}\n{self.ingest.describe()}"


def ingest_from_pacs(
    source: str | SourceLocation,
    query: PacsQuery,
    *,
    out: Path,
    pseudonymizer: Pseudonymizer,
    labels: Path | None = None,
    spec: PreprocessingSpec | None = None,
    workers: int = 0,
    max_staging_bytes: int = 20 * GIB,
    retry: RetryPolicy | None = None,
    progress: bool = False,
    limits: IngestLimits | None = None,
) -> PacsIngestResult:
    out = Path(out)
    remote = open_remote(source, retry)
    puller = Puller(remote, out / "pull-staging", max_staging_bytes=max_staging_bytes)
    plan = puller.plan(query)
    if not plan.new:
        raise IngestError(
            f"the PACS has no series for the query ({plan.query})", where=remote.location.display,
            fix="check the dates, modality and id list; `medtl pacs query` shows what the PACS holds",
        )  # fmt: skip
    result = None
    try:
        for batch in puller.batches(plan):
            accounted = len(batch.series) + len(puller.summary.failed)
            if accounted < len(plan.new):
                raise IngestError(
                    f"the cohort exceeds the staging limit ({max_staging_bytes / GIB:.1f} GiB) after {accounted} of "
                    f"{len(plan.new)} series",
                    where=remote.location.display,
                    fix="raise --max-staging-gb (the disk under the dataset folder must hold the whole cohort once) "
                    "or split the id list into several datasets",
                )
            result = ingest_sources([batch.folder], out=out, pseudonymizer=pseudonymizer, labels=labels, spec=spec,
                                    workers=workers, progress=progress, limits=limits)  # fmt: skip
            puller.commit(batch)
    finally:  # staged DICOM never outlives the run, whatever stopped it (and only medtl's own staging is removed)
        puller.release()
    failed = list(puller.summary.failed)
    _write_report(out / PULL_REPORT, remote.location.display, plan.query, len(plan.new), puller.summary.pulled, failed)
    if result is None:
        raise IngestError(
            f"none of the {len(plan.new)} series could be retrieved", where=remote.location.display,
            fix=f"read the reasons in {out / PULL_REPORT} and the PACS's log",
        )  # fmt: skip
    return PacsIngestResult(result, len(plan.new), puller.summary.pulled, failed)


def _write_report(path: Path, source: str, query: str, found: int, pulled: int, failed: list[tuple[str, str]]) -> None:
    failures = [PulledFailure(series_key=key, reason=reason) for key, reason in failed]
    report = PullReport(source=source, query=query, series_found=found, series_pulled=pulled, failed=failures)
    write_json(report, path)
