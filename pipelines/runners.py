"""Where tasks run: Prefect's default threads, or a Dask cluster for CV folds and scoring chunks.

The flows are written once; `on_dask(flow, ...)` returns the same flow with a Dask task runner. Folds and chunks
are independent tasks that read and write files, so the workers must see the same file system (a shared volume or
network share) as the flow. A Dask runner needs a real Prefect server (PREFECT_API_URL), not the temporary one.
"""

from __future__ import annotations

import contextlib
from typing import Any

GPU = "GPU"  # the Dask worker resource: start GPU workers with `dask worker ... --resources GPU=1`


def on_dask(flow: Any, *, address: str | None = None, n_workers: int = 2, threads_per_worker: int = 1) -> Any:
    """The flow with its tasks on the Dask scheduler at ADDRESS, or on a local cluster of N_WORKERS processes."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as error:  # an optional extra: say how to get it
        raise ImportError("the Dask task runner needs the dask extra: pip install 'medtl[dask]'") from error
    if address:
        runner = DaskTaskRunner(address=address)
    else:
        runner = DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={"n_workers": n_workers, "threads_per_worker": threads_per_worker, "processes": True,
                            "dashboard_address": None},
        )  # fmt: skip
    return flow.with_options(task_runner=runner)


def needs_gpu(on_gpu: bool) -> contextlib.AbstractContextManager:
    """Around a GPU task's `.submit`: a Dask scheduler then puts it only on a worker with a free GPU, one at a time;
    elsewhere (threads, CPU training) it changes nothing."""
    if not on_gpu:
        return contextlib.nullcontext()
    try:
        import dask
    except ImportError:
        return contextlib.nullcontext()
    return dask.annotate(resources={GPU: 1})


def worker_name() -> str:
    """Which Dask worker ran the current task ("local" outside Dask): recorded per fold, shown in the UI."""
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "local"
