"""A real Orthanc PACS on loopback for the integration tests: DICOMweb plugin, HTTP basic auth, a DICOM port that
knows medtl's AE title, storage in a temporary folder. Started and stopped by process id.

Debian: `apt-get install orthanc orthanc-dicomweb` (`.ci/run` does it). Without Orthanc the tests skip, unless
MEDTL_REQUIRE_ORTHANC=1 (set in CI), where a missing Orthanc is a failure.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

USER, PASSWORD = "medtl-test", "loopback-only-secret"
PACS_AET, OUR_AET = "ORTHANC", "MEDTL"
_PLUGIN_GLOBS = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*", "/usr/lib/orthanc/libOrthancDicomWeb.so*")


def orthanc_or_skip() -> tuple[str, str]:
    binary = shutil.which("Orthanc")
    plugins = [path for pattern in _PLUGIN_GLOBS for path in sorted(glob.glob(pattern))]
    if binary and plugins:
        return binary, plugins[0]
    message = "Orthanc with its DICOMweb plugin is not installed (apt-get install orthanc orthanc-dicomweb)"
    if os.environ.get("MEDTL_REQUIRE_ORTHANC") == "1":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Orthanc:
    folder: Path
    check_called_aet: bool = False
    http_port: int = field(default_factory=free_port)
    dicom_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_uri(self) -> str:
        return f"dicomweb+http://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def dimse_uri(self) -> str:
        return f"dimse://{PACS_AET}@127.0.0.1:{self.dicom_port}?calling={OUR_AET}"

    @property
    def storage(self) -> Path:
        return self.folder / "storage"

    def start(self) -> Orthanc:
        binary, plugin = orthanc_or_skip()
        config = {
            "Name": "medtl-test-pacs",
            "StorageDirectory": str(self.storage),
            "IndexDirectory": str(self.storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": PACS_AET,
            "DicomCheckCalledAet": self.check_called_aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [plugin],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "DicomModalities": {"medtl": [OUR_AET, "127.0.0.1", free_port()]},
            "StableAge": 1,
            "MaximumStorageCacheSize": 0,  # read from disk every time, so a broken file shows
        }
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "orthanc.json").write_text(json.dumps(config))
        log = open(self.folder / "orthanc.log", "ab")  # noqa: SIM115 - the server writes to it until stop()
        self.process = subprocess.Popen([binary, str(self.folder / "orthanc.json")], stdout=log, stderr=log,
                                        start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                if self.get("/system").status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("Orthanc did not answer within 30 s")

    def stop(self, *, graceful: bool = True) -> None:
        """Graceful: SIGTERM and wait, for a PACS that a test starts again on the same storage. Otherwise SIGKILL at
        once, for a server whose storage is thrown away: a graceful stop takes Orthanc ~3 s, paid by every test."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.rest + path, auth=(USER, PASSWORD), timeout=30, **kwargs)

    def upload(self, files: list[Path]) -> int:
        """Through Orthanc's own REST API (not medtl's code), so the tests check medtl against the server."""
        for path in files:
            answer = requests.post(self.rest + "/instances", data=path.read_bytes(), auth=(USER, PASSWORD), timeout=30)
            answer.raise_for_status()
        return len(files)

    def series_of_modality(self, modality: str) -> list[dict]:
        answer = requests.post(self.rest + "/tools/find", auth=(USER, PASSWORD), timeout=30, json={
            "Level": "Series", "Query": {"Modality": modality}, "Expand": True,
        })  # fmt: skip
        answer.raise_for_status()
        return answer.json()

    def attachment_files(self, series_uid: str) -> list[Path]:
        """Where Orthanc keeps a series' instances on disk (to break one, as a failing disk would)."""
        found = requests.post(self.rest + "/tools/lookup", data=series_uid, auth=(USER, PASSWORD), timeout=30).json()
        series_id = next(item["ID"] for item in found if item["Type"] == "Series")
        paths = []
        for instance in self.get(f"/series/{series_id}/instances").json():
            uuid = self.get(f"/instances/{instance['ID']}/attachments/dicom/info").json()["Uuid"]
            paths.append(self.storage / uuid[:2] / uuid[2:4] / uuid)
        return paths


def dicom_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*.dcm") if path.is_file())


@pytest.fixture
def pacs_credentials(monkeypatch):
    monkeypatch.delenv("MEDTL_PACS_CREDENTIALS", raising=False)
    monkeypatch.delenv("MEDTL_PACS_TOKEN", raising=False)
    monkeypatch.setenv("MEDTL_PACS_USERNAME", USER)
    monkeypatch.setenv("MEDTL_PACS_PASSWORD", PASSWORD)


@pytest.fixture
def orthanc(tmp_path, pacs_credentials):
    """A fresh Orthanc for one test (it starts in about a second), stopped by process id afterwards."""
    server = Orthanc(tmp_path / "orthanc").start()
    try:
        yield server
    finally:
        server.stop(graceful=False)  # its storage goes with the test's folder
