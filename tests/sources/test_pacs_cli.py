"""`medtl pacs ping / query` as an operator runs them against a real Orthanc: counts, exit codes, no secrets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from support.orthanc import PASSWORD, dicom_files

pytestmark = [pytest.mark.integration]


def medtl(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medtl.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200", **env})  # fmt: skip


def test_ping_and_query_report_counts_and_map_failures_to_exit_codes(orthanc, cohort):
    files = dicom_files(cohort / "dicom")
    orthanc.upload(files)
    assert medtl("pacs", "ping", orthanc.dicomweb_uri).returncode == 0
    assert medtl("pacs", "ping", orthanc.dimse_uri).returncode == 0

    listed = medtl("pacs", "query", orthanc.dimse_uri, "--modality", "dx")
    assert listed.returncode == 0, listed.stderr
    expected = len(orthanc.series_of_modality("DX"))
    assert f"{expected} series in" in listed.stdout and "CHEST AP" in listed.stdout
    assert "MRN" not in listed.stdout  # counts by description, no patient ids

    refused = medtl("pacs", "ping", orthanc.dicomweb_uri, MEDTL_PACS_PASSWORD="wrong")
    assert refused.returncode == 10 and "refused our credentials" in refused.stderr and PASSWORD not in refused.stderr
    orthanc.stop(graceful=False)  # down is down; nothing restarts on its storage
    down = medtl("pacs", "ping", orthanc.dicomweb_uri)
    assert down.returncode == 9 and "run again later" in down.stderr
    bad = medtl("pacs", "ping", "dicomweb+http://user:pw@127.0.0.1:1/dicom-web")
    assert bad.returncode == 1 and "contains a password" in bad.stderr and ":pw@" not in bad.stderr
