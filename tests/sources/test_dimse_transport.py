"""DIMSE transport: the socket answers and sends at once (the ~45 ms per C-GET instance was a TCP wait), the
reactor polls often enough not to add a millisecond per instance, and a pull shares one association across a
stretch of series."""

from __future__ import annotations

import select
import socket
from types import SimpleNamespace

import pytest

from medtl.sources.dimse import REACTOR_POLL_SECONDS, _prompt_tcp


@pytest.fixture
def tcp_pair():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    yield client, peer
    for sock in (client, peer, server):
        sock.close()


def test_the_association_socket_gets_nodelay_and_asks_for_an_immediate_ack_before_each_read(tcp_pair):
    client, peer = tcp_pair
    transport = SimpleNamespace(socket=client)
    reactor = SimpleNamespace(socket=transport, _run_loop_delay=0.001)
    _prompt_tcp(SimpleNamespace(assoc=SimpleNamespace(dul=reactor)))
    assert reactor._run_loop_delay == REACTOR_POLL_SECONDS < 0.001  # each sub-operation's round trip waits less
    assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    if hasattr(socket, "TCP_QUICKACK"):
        assert transport.socket is not client and transport.socket.fileno() == client.fileno()
    peer.sendall(b"P-DATA")
    ready, _, _ = select.select([transport.socket], [], [], 5)  # pynetdicom polls the wrapped socket like this
    assert ready and transport.socket.recv(6) == b"P-DATA"
    transport.socket.sendall(b"RSP")  # everything else passes through to the socket
    assert peer.recv(3) == b"RSP"


@pytest.mark.integration
def test_a_pull_retrieves_a_stretch_of_series_over_one_association_and_releases_it_between_batches(
    orthanc, cohort, tmp_path, monkeypatch
):
    from medtl.sources.dimse import DimseSource
    from medtl.sources.pull import Puller, open_remote
    from medtl.sources.query import PacsQuery
    from support.orthanc import dicom_files

    orthanc.upload(dicom_files(cohort / "dicom"))
    source = open_remote(orthanc.dimse_uri)
    opened, open_ = [], DimseSource._open

    def counting(self, contexts, **kwargs):
        association = open_(self, contexts, **kwargs)
        opened.append(association)
        return association

    monkeypatch.setattr(DimseSource, "_open", counting)
    puller = Puller(source, tmp_path / "staging", max_staging_bytes=1_500_000)
    plan = puller.plan(PacsQuery())
    batches = 0
    for batch in puller.batches(plan):
        batches += 1
        assert all(not association.is_established for association in opened)  # nothing open while we work
        puller.commit(batch)
    retrievals = [a for a in opened if len(a.requestor.requested_contexts) > 1]
    assert len(plan.new) > batches > 1 and len(retrievals) == batches  # one association per stretch, not per series
    assert puller.summary.pulled == len(plan.new)
    assert {association.dul._run_loop_delay for association in opened} == {REACTOR_POLL_SECONDS}
