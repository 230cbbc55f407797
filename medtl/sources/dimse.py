"""A PACS over DIMSE (pynetdicom): C-FIND to find, C-GET to retrieve, C-STORE to return results.

C-GET rather than C-MOVE: the images come back on our own association, so this side needs no listening port and
no firewall opening, and the PACS needs only our AE title (for C-MOVE it also needs our address and a port that
it can reach). Each instance is written to disk as it arrives, in the transfer syntax the PACS sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)
from pynetdicom.status import code_to_category

from medtl.errors import SourceAuthError, SourceError
from medtl.io.dicom.sop import readable_image_classes
from medtl.sources.location import SourceLocation
from medtl.sources.query import RemoteSeries
from medtl.sources.remote import RemoteSource, RetryPolicy, SeriesFailed, Transient

PENDING = (0xFF00, 0xFF01)
_ALL_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
]  # every syntax pydicom's decoders (pylibjpeg family) read, so the PACS need not transcode


class DimseSource(RemoteSource):
    def __init__(self, location: SourceLocation, retry: RetryPolicy | None = None, timeout: float = 60.0) -> None:
        super().__init__(location, retry)
        self.timeout = timeout

    def _ping(self) -> None:
        with self._association([build_context(Verification)]) as association:
            status = association.send_c_echo()
            if not status or status.Status != 0x0000:
                raise Transient("C-ECHO got no success status")

    def _find(self, level: str, filters: dict[str, str], fields: Sequence[str], study_uid: str | None) -> list[Dataset]:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = level
        for keyword in fields:
            setattr(identifier, keyword, "")
        for keyword, value in filters.items():
            setattr(identifier, keyword, value)
        if study_uid is not None:
            identifier.StudyInstanceUID = study_uid
        model = StudyRootQueryRetrieveInformationModelFind
        with self._association([build_context(model)]) as association:
            answers = []
            for status, dataset in association.send_c_find(identifier, model):
                if not status:
                    raise Transient(_no_answer("C-FIND", association))
                if status.Status in PENDING and dataset is not None:
                    answers.append(dataset)
                elif code_to_category(status.Status) == "Failure":
                    raise SourceError(f"the PACS failed the C-FIND (status 0x{status.Status:04X})",
                                      where=self.location.display, fix="check the PACS's log")  # fmt: skip
            return answers

    def _retrieve(self, series: RemoteSeries, folder: Path) -> int:
        model = StudyRootQueryRetrieveInformationModelGet
        classes = readable_image_classes()
        contexts = [build_context(model)] + [build_context(uid, _ALL_SYNTAXES) for uid in classes]
        roles = [build_role(uid, scp_role=True) for uid in classes]
        written = {"files": 0, "bytes": 0}

        def keep(event) -> int:
            path = folder / f"{written['files']:06d}.dcm"
            path.write_bytes(event.encoded_dataset(include_meta=True))
            written["files"] += 1
            written["bytes"] += path.stat().st_size
            return 0x0000

        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.StudyInstanceUID = series.study_uid
        identifier.SeriesInstanceUID = series.series_uid
        with self._association(contexts, roles=roles, handlers=[(evt.EVT_C_STORE, keep)]) as association:
            final = None
            for status, _ in association.send_c_get(identifier, model):
                if not status:
                    raise Transient(_no_answer("C-GET", association))
                final = status
        failed = int(getattr(final, "NumberOfFailedSuboperations", 0) or 0) if final is not None else 0
        if final is None or code_to_category(final.Status) == "Failure" or failed:
            code = f"0x{final.Status:04X}" if final is not None else "none"
            raise SeriesFailed(f"C-GET of the series failed (status {code}, {failed} instance(s) not sent)",
                               where=series.key)  # fmt: skip
        if written["files"] == 0:
            raise SeriesFailed("the PACS sent no instances for the series", where=series.key)
        return written["bytes"]

    def _store(self, datasets: Sequence[Dataset]) -> None:
        classes = dict.fromkeys(str(d.SOPClassUID) for d in datasets)
        with self._association([build_context(uid) for uid in classes]) as association:
            for dataset in datasets:
                status = association.send_c_store(dataset)
                if not status:
                    raise Transient(_no_answer("C-STORE", association))
                if code_to_category(status.Status) == "Failure":
                    raise SourceError(f"the PACS refused a result object (C-STORE status 0x{status.Status:04X})",
                                      where=self.location.display,
                                      fix="check that the PACS accepts this SOP class from our AE title")  # fmt: skip

    @contextmanager
    def _association(self, contexts, *, roles=(), handlers=()):
        location = self.location
        ae = AE(ae_title=location.calling_aet)
        ae.requested_contexts = contexts
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        association = ae.associate(location.host, location.port, ae_title=location.called_aet,
                                   ext_neg=list(roles) or None, evt_handlers=list(handlers))  # fmt: skip
        if association.is_rejected:
            raise SourceAuthError(
                f"the PACS rejected the association from AE title {location.calling_aet!r}",
                where=location.display,
                fix="register our AE title (and this machine's address) on the PACS, and check the PACS's AE title",
            )
        if not association.is_established:
            raise Transient("no association (connection refused, aborted or timed out)")
        try:
            yield association
        finally:
            if association.is_established:
                association.release()


def _no_answer(service: str, association) -> str:
    if association.is_aborted:
        return f"the PACS aborted the association during {service} (PACSes do so for an AE title they do not know)"
    return f"{service} got no answer in time"
