"""Dask worker preload (and in-process patch) for the GPU scale-out check: wraps medtl's train_unit so that every
(arm, fold) unit writes one JSON record -- which process/worker ran it, on which device, when, how much CUDA memory
it really allocated -- into $MEDTL_PROBE_DIR."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path


def _record(plan, arm, fold, start, end, extra):
    folder = os.environ.get("MEDTL_PROBE_DIR")
    if not folder:
        return
    import torch

    from pipelines.runners import worker_name

    entry = {
        "arm": arm,
        "fold": int(fold),
        "worker": worker_name(),
        "pid": os.getpid(),
        "thread": threading.current_thread().name,
        "host": socket.gethostname(),
        "plan_device": str(plan.device),
        "cuda_available": torch.cuda.is_available(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "start": start,
        "end": end,
        "seconds": end - start,
        **extra,
    }
    Path(folder).mkdir(parents=True, exist_ok=True)
    name = f"{os.getpid()}-{arm}-{fold}-{time.time_ns()}.json"
    (Path(folder) / name).write_text(json.dumps(entry), encoding="utf-8")


_ORIGINAL = None


def probed_train_unit(plan, arm_name, fold_index):
    """medtl.training.train.train_unit, plus one JSON record per unit (module level: pickles by reference)."""
    import torch

    if _ORIGINAL is None:
        patch()
    extra = {}
    on_cuda = plan.device.type == "cuda" and torch.cuda.is_available()
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        extra["cuda_device_name"] = torch.cuda.get_device_name(torch.cuda.current_device())
        extra["cuda_device_index"] = torch.cuda.current_device()
    start = time.time()
    try:
        return _ORIGINAL(plan, arm_name, fold_index)
    finally:
        if on_cuda:
            torch.cuda.synchronize()
            extra["cuda_peak_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 2)
        _record(plan, arm_name, fold_index, start, time.time(), extra)


def patch() -> None:
    global _ORIGINAL
    if _ORIGINAL is not None:
        return
    import medtl.training.train as library
    import pipelines.train as flows

    _ORIGINAL = library.train_unit
    library.train_unit = probed_train_unit  # a by-reference unpickle of medtl.training.train.train_unit finds this
    flows.train_unit = probed_train_unit  # the task body looks the name up in pipelines.train


# Dask preload hooks: run in each worker process as it starts.
def dask_setup(worker=None) -> None:
    patch()
