"""Shared fixtures for the model tests: isolated caches and no network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test gets its own TORCH_HOME and MEDTL_HOME, and any attempt to open a network connection fails."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("MEDTL_HOME", str(tmp_path / "medtl_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: on a shared 2-core box intra-op threads cost far more than they gain (3x wall time)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
