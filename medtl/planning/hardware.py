"""The machine a plan is made for. Hardware may change how long the plan takes, never what it trains."""

from __future__ import annotations

import os

import torch

from medtl.contracts.planning import Hardware
from medtl.errors import ConfigError


def detect(choice: str = "auto") -> Hardware:
    """The device a run would use (`auto`: CUDA when present), with its name and the CPU count."""
    if choice not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"unknown device {choice!r}", fix="use auto, cpu or cuda")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is available", fix="use --device auto or cpu")
    cuda = choice == "cuda" or (choice == "auto" and torch.cuda.is_available())
    return Hardware(
        device="cuda" if cuda else "cpu",
        name=torch.cuda.get_device_name() if cuda else "cpu",
        cpus=os.cpu_count() or 1,
    )
