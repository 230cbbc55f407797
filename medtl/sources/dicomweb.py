"""A PACS over DICOMweb: QIDO-RS to find, WADO-RS to retrieve (streamed, original transfer syntax), STOW-RS to
return results. Built on dicomweb-client; requests' errors become medtl errors here with URL-free messages (the
URLs carry study and series UIDs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from medtl.errors import SourceAuthError, SourceError
from medtl.sources.credentials import ENV_FILE, ENV_PASSWORD, ENV_TOKEN, ENV_USERNAME, credentials_from_env
from medtl.sources.location import SourceLocation
from medtl.sources.query import RemoteSeries
from medtl.sources.remote import RemoteSource, RetryPolicy, SeriesFailed, Transient

TRANSIENT_STATUS = {408, 429, 502, 503, 504}
ORIGINAL_SYNTAX = (("application/dicom", "*"),)  # as stored: no transcoding, the bytes the modality wrote


class DicomWebSource(RemoteSource):
    def __init__(self, location: SourceLocation, retry: RetryPolicy | None = None, timeout: float = 60.0) -> None:
        super().__init__(location, retry)
        credentials = credentials_from_env(location.username)
        session = requests.Session()
        if credentials.token is not None:
            session.headers["Authorization"] = f"Bearer {credentials.token.get_secret_value()}"
        elif credentials.username is not None:
            session.auth = (credentials.username, credentials.password.get_secret_value())
        self.client = DICOMwebClient(location.url, session=session, timeout=timeout)
        # dicomweb-client retries every failed request itself (five tries, waits doubling from 2 s): under medtl's
        # own policy that multiplied the user's attempts by five and held a PACS outage for ~30 s per call before
        # the policy even saw it. One retry loop, the one the user configures.
        self.client.set_http_retry_params(retry=False)

    def _ping(self) -> None:
        self._call(lambda: self.client.search_for_studies(limit=1), "QIDO-RS")

    def _find(self, level: str, filters: dict[str, str], fields: Sequence[str], study_uid: str | None) -> list[Dataset]:
        if level == "STUDY":
            answers = self._call(
                lambda: self.client.search_for_studies(search_filters=filters, fields=list(fields)),
                "QIDO-RS",
            )
        else:
            answers = self._call(
                lambda: self.client.search_for_series(study_uid, search_filters=filters, fields=list(fields)),
                "QIDO-RS",
            )
        return [Dataset.from_json(answer) for answer in answers]

    def _retrieve(self, series: RemoteSeries, folder: Path) -> int:
        def stream() -> int:
            written = 0
            instances = self.client.iter_series(series.study_uid, series.series_uid, media_types=ORIGINAL_SYNTAX)
            for number, dataset in enumerate(instances):
                path = folder / f"{number:06d}.dcm"
                pydicom.dcmwrite(path, dataset, enforce_file_format=True)
                written += path.stat().st_size
            if written == 0:
                raise SeriesFailed("the PACS returned no instances for the series", where=series.key)
            return written

        return self._call(stream, "WADO-RS", series=series)

    def _store(self, datasets: Sequence[Dataset]) -> None:
        self._call(lambda: self.client.store_instances(datasets), "STOW-RS")

    def _call(self, request, service: str, series: RemoteSeries | None = None):
        """Run one dicomweb-client request; translate its failures into what the caller can act on."""
        try:
            return request()
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else None
            if status in (401, 403):
                raise SourceAuthError(
                    f"the DICOMweb server refused our credentials (HTTP {status} on {service})",
                    where=self.location.display,
                    fix=f"check {ENV_USERNAME}/{ENV_PASSWORD}, {ENV_TOKEN} or the file in {ENV_FILE}, and that "
                    "this user may query, retrieve and store",
                ) from None
            if status in TRANSIENT_STATUS or status is None:
                raise Transient(f"HTTP {status} from {service}") from None
            if series is not None:
                raise SeriesFailed(f"HTTP {status} from {service} for this series", where=series.key) from None
            raise SourceError(
                f"the DICOMweb server answered HTTP {status} to a {service} request",
                where=self.location.display,
                fix="check the service root in the URI (e.g. .../dicom-web) and the server's log",
            ) from None
        except (requests.ConnectionError, requests.Timeout) as error:
            raise Transient(f"{type(error).__name__} talking to {service}") from None
        except requests.RequestException as error:  # a broken multipart stream, a chunked-encoding error...
            raise Transient(f"{type(error).__name__} during {service}") from None
