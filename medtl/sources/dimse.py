"""A PACS over DIMSE (pynetdicom): C-FIND to find, C-GET to retrieve, C-STORE to return results.

C-GET rather than C-MOVE: the images come back on our own association, so this side needs no listening port and
no firewall opening, and the PACS needs only our AE title (for C-MOVE it also needs our address and a port that
it can reach). Each instance is written to disk as it arrives, in the transfer syntax the PACS sent.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
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


@dataclass
class _Sink:
    """Where the instances of the series being retrieved go, and how many arrived."""

    folder: Path
    files: int = 0
    bytes: int = 0


class DimseSource(RemoteSource):
    def __init__(self, location: SourceLocation, retry: RetryPolicy | None = None, timeout: float = 60.0) -> None:
        super().__init__(location, retry)
        self.timeout = timeout
        self._retrieval = None  # the C-GET association kept between series inside `retrieving()`
        self._keep = False
        self._sink = _Sink(Path())

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

    @contextmanager
    def retrieving(self) -> Iterator[None]:
        """Series retrieved in this stretch share one association (opening one took ~65 ms with Orthanc)."""
        self._keep = True
        try:
            yield
        finally:
            self._keep = False
            self._drop_retrieval()

    def _retrieve(self, series: RemoteSeries, folder: Path) -> int:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "SERIES"
        identifier.StudyInstanceUID = series.study_uid
        identifier.SeriesInstanceUID = series.series_uid
        self._sink = _Sink(folder)
        association = self._retrieval_association()
        final = None
        try:
            for status, _ in association.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet):
                if not status:
                    raise Transient(_no_answer("C-GET", association))
                final = status
        except Transient:
            self._drop_retrieval()  # a broken association is never reused; the retry opens a new one
            raise
        finally:
            if not self._keep:
                self._drop_retrieval()
        sink = self._sink
        failed = int(getattr(final, "NumberOfFailedSuboperations", 0) or 0) if final is not None else 0
        if final is None or code_to_category(final.Status) == "Failure" or failed:
            code = f"0x{final.Status:04X}" if final is not None else "none"
            raise SeriesFailed(f"C-GET of the series failed (status {code}, {failed} instance(s) not sent)",
                               where=series.key)  # fmt: skip
        if sink.files == 0:
            raise SeriesFailed("the PACS sent no instances for the series", where=series.key)
        return sink.bytes

    def _retrieval_association(self):
        kept = self._retrieval
        if kept is not None and kept.is_established:
            return kept
        self._drop_retrieval()
        classes = readable_image_classes()
        contexts = [build_context(StudyRootQueryRetrieveInformationModelGet)]
        contexts += [build_context(uid, _ALL_SYNTAXES) for uid in classes]
        roles = [build_role(uid, scp_role=True) for uid in classes]
        self._retrieval = self._open(contexts, roles=roles, handlers=[(evt.EVT_C_STORE, self._on_store)])
        return self._retrieval

    def _drop_retrieval(self) -> None:
        kept, self._retrieval = self._retrieval, None
        if kept is not None and kept.is_established:
            kept.release()

    def _on_store(self, event) -> int:
        """Each instance is written as it arrives, into the folder of the series being retrieved."""
        sink = self._sink
        path = sink.folder / f"{sink.files:06d}.dcm"
        path.write_bytes(event.encoded_dataset(include_meta=True))
        sink.files += 1
        sink.bytes += path.stat().st_size
        return 0x0000

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
        association = self._open(contexts, roles=roles, handlers=handlers)
        try:
            yield association
        finally:
            if association.is_established:
                association.release()

    def _open(self, contexts, *, roles=(), handlers=()):
        location = self.location
        ae = AE(ae_title=location.calling_aet)
        ae.requested_contexts = contexts
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        handlers = [*handlers, (evt.EVT_CONN_OPEN, _prompt_tcp)]
        association = ae.associate(location.host, location.port, ae_title=location.called_aet,
                                   ext_neg=list(roles) or None, evt_handlers=handlers)  # fmt: skip
        if association.is_rejected:
            raise SourceAuthError(
                f"the PACS rejected the association from AE title {location.calling_aet!r}",
                where=location.display,
                fix="register our AE title (and this machine's address) on the PACS, and check the PACS's AE title",
            )
        if not association.is_established:
            raise Transient("no association (connection refused, aborted or timed out)")
        return association


REACTOR_POLL_SECONDS = 1e-4
"""How long pynetdicom's reactor thread sleeps when it finds nothing to do (its default: 1 ms). Every C-STORE
sub-operation of a C-GET is a round trip through that thread, so the sleep was paid on each instance: against
Orthanc, 0.48x the DICOMweb pull's speed with 1 ms, 0.63x with 0.2 ms, 0.67x with 0.05 ms (bench_pacs, 5 rounds
each). 0.1 ms costs about a tenth of a core while an association sits idle, and associations live one stretch of
series."""


def _prompt_tcp(event) -> None:
    """Answer every TCP segment at once and send ours at once: DIMSE is a request-response protocol.

    Measured against Orthanc (benchmarks/bench_pacs.py): a C-GET waited about 45 ms per instance. Orthanc's DICOM
    stack sends each C-STORE sub-operation as a small command PDU and then the dataset with Nagle's algorithm on,
    so the dataset waits for the ACK of the command, and Linux delays that ACK by up to 40 ms when it has nothing
    to send back. Asking for an immediate ACK before every read (TCP_QUICKACK, Linux; the kernel clears it after
    a while, hence each read) removes the wait whatever the PACS does; TCP_NODELAY does the same for what we send
    (C-STORE of results). Where TCP_QUICKACK does not exist, only TCP_NODELAY is set.
    """
    dul = event.assoc.dul
    if isinstance(getattr(dul, "_run_loop_delay", None), float):  # pynetdicom's reactor; absent: left as it is
        dul._run_loop_delay = REACTOR_POLL_SECONDS
    transport = dul.socket
    raw = getattr(transport, "socket", None)
    if not isinstance(raw, socket.socket):
        return
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(socket, "TCP_QUICKACK"):
        transport.socket = _QuickAckSocket(raw)


class _QuickAckSocket:
    """The association's socket, asking the kernel for an immediate ACK before each read."""

    def __init__(self, raw: socket.socket) -> None:
        self._raw = raw

    def recv(self, size: int) -> bytes:
        with suppress(OSError):  # a closed socket: recv reports it
            self._raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return self._raw.recv(size)

    def fileno(self) -> int:  # select() on this object
        return self._raw.fileno()

    def __getattr__(self, name: str):
        return getattr(self._raw, name)


def _no_answer(service: str, association) -> str:
    if association.is_aborted:
        return f"the PACS aborted the association during {service} (PACSes do so for an AE title they do not know)"
    return f"{service} got no answer in time"
