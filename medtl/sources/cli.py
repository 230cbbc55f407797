"""`medtl pacs ...` and the query options that `medtl ingest` and `medtl score` share for PACS sources."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from medtl.errors import ConfigError, describe_validation_error

pacs_app = typer.Typer(help="Talk to a PACS (DICOMweb or DIMSE): check the connection, preview a query.",
                       no_args_is_help=True)  # fmt: skip
console = Console()

_DATE = ["%Y-%m-%d"]
DateFrom = Annotated[datetime | None, typer.Option(formats=_DATE, help="PACS: first study date (YYYY-MM-DD).")]
DateTo = Annotated[datetime | None, typer.Option(formats=_DATE, help="PACS: last study date (YYYY-MM-DD).")]
Lookback = Annotated[int | None, typer.Option(min=1, help="PACS: study dates from N days ago (scheduled runs).")]
Modality = Annotated[str | None, typer.Option(help="PACS: modality, e.g. CT.")]
BodyPart = Annotated[str | None, typer.Option(help="PACS: Body Part Examined, e.g. CHEST.")]
Description = Annotated[str | None, typer.Option(help="PACS: series description glob, e.g. '*AXIAL*'.")]
IdList = Annotated[Path | None, typer.Option(help="PACS: CSV with an accession_number or study_uid column.")]
StagingGb = Annotated[float, typer.Option(min=0.01, help="PACS: disk for staged series, in GiB.")]


def build_query(
    study_date_from: datetime | None = None,
    study_date_to: datetime | None = None,
    lookback_days: int | None = None,
    modality: str | None = None,
    body_part: str | None = None,
    series_description: str | None = None,
    id_list: Path | None = None,
):
    from medtl.sources.query import PacsQuery

    try:
        return PacsQuery(
            study_date_from=study_date_from.date() if study_date_from else None,
            study_date_to=study_date_to.date() if study_date_to else None,
            lookback_days=lookback_days,
            modality=modality.upper() if modality else None,
            body_part=body_part,
            series_description=series_description,
            id_list=id_list,
        )
    except ValidationError as error:
        what = describe_validation_error(error, root="query")
        raise ConfigError(what, fix="correct the PACS query options") from None


def is_remote(text: str) -> bool:
    """A PACS URI (an unknown scheme or a password in it is an error here, not a folder that does not exist)."""
    from medtl.sources.location import parse_location

    return parse_location(text).is_remote


@pacs_app.command("ping")
def ping(source: Annotated[str, typer.Argument(help="dicomweb+http(s)://host:port/root or dimse://AET@host:port")]):
    """Check that the PACS answers and accepts our credentials (QIDO-RS) or AE title (C-ECHO)."""
    from medtl.sources.pull import open_remote
    from medtl.sources.remote import RetryPolicy

    remote = open_remote(source, RetryPolicy(attempts=1))
    remote.ping()
    console.print(f"{remote.location.display}: answers")


@pacs_app.command("query")
def query(
    source: Annotated[str, typer.Argument(help="dicomweb+http(s)://host:port/root or dimse://AET@host:port")],
    study_date_from: DateFrom = None,
    study_date_to: DateTo = None,
    lookback_days: Lookback = None,
    modality: Modality = None,
    body_part: BodyPart = None,
    series_description: Description = None,
    id_list: IdList = None,
) -> None:
    """Count the series a query would pull, by modality / body part / description (no identifiers shown)."""
    from medtl.sources.pull import open_remote

    pacs_query = build_query(study_date_from, study_date_to, lookback_days, modality, body_part, series_description,
                             id_list)  # fmt: skip
    series = open_remote(source).find_series(pacs_query)
    counts = Counter((s.modality or "", s.body_part or "", s.description or "") for s in series)
    studies = len({s.study_uid for s in series})
    table = Table(title=f"{len(series)} series in {studies} studies ({pacs_query.describe()})")
    for column in ("modality", "body part", "series description", "series"):
        table.add_column(column)
    for (kind, part, description), count in sorted(counts.items()):
        table.add_row(kind, part, description, str(count))
    console.print(table)
