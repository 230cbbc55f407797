"""Several (arm, fold) units training at once, each in a process of its own (`concurrent_folds`).

Why: a small model (a ResNet-18 on 28-64 px images, batches of 16-128) leaves most of a GPU idle; each step is a
few dozen short kernels, paced by Python and kernel launches rather than by the device, so two or four folds side
by side can share one GPU. Processes, not threads: each gets its own interpreter (no lock shared between the
folds' Python work) and its own CUDA context; started with "spawn", since CUDA does not survive a fork.

Speed only, never the recipe: every unit is trained by the function that trains it one at a time, with the same
seed, and leaves the same files in the work folder, which the run then reads back as it reads a resumed fold. On a
CPU it gains little, since torch already spreads one fold over the cores (two BreastMNIST folds at once on 2 cores:
1.06x for 300 steps each, 0.64x for 60, where starting a process dominates), so it is for GPUs: `auto` (what
`medtl plan` writes) means several folds on a GPU and one on a CPU (`fold_width`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, Literal

import torch

from medtl.errors import TrainingError
from medtl.io.allocator import heap_for_arrays_from_now

Unit = tuple[str, int]  # (arm name, fold index)

# `auto` on a GPU. Four PneumoniaMNIST folds (ResNet-18, 28 px, batch 16, 300 steps each) side by side on an H200
# took 30.3 s against 42.9 s one at a time (1.41x, one round; results/concurrent_folds_pneumoniamnist_gpu.json),
# with the same predictions to the last digit.
AUTO_WIDTH = 4
GPU_MEMORY_SHARE = 0.5  # of the GPU's free memory, at most, for all the folds side by side
# What one fold's process holds on the GPU, estimated on the high side (nothing is measured before the folds start):
CONTEXT_BYTES = 1 << 30  # its CUDA context, cuDNN workspaces and the caching allocator's slack
BYTES_PER_PARAMETER = 24  # fp32 weights, gradients, AdamW's two moments, the weight average, a bf16 copy
BYTES_PER_INPUT_VOXEL = 2048  # a ResNet's activations kept for the backward pass, per input pixel or voxel
CORES_PER_FOLD = 2  # each process paces its GPU work from Python: one core, and one for its data and the system


def fold_width(
    setting: int | Literal["auto"],
    device: torch.device,
    *,
    parameters: int,
    data_bytes: int,
    batch_voxels: int,
    cores: int,
) -> int:
    """How many folds train side by side: a number as set, or for `auto` one on a CPU and on a GPU up to
    AUTO_WIDTH, as many as half its free memory holds (each fold: a CUDA context, the data set kept on the device,
    the model's training state and a batch's activations, estimated high) and the cores can pace. `batch_voxels`:
    input pixels (or voxels) in one training batch."""
    if setting != "auto":
        return setting
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per_fold = CONTEXT_BYTES + data_bytes + parameters * BYTES_PER_PARAMETER + batch_voxels * BYTES_PER_INPUT_VOXEL
    by_memory = int(GPU_MEMORY_SHARE * free // per_fold)
    return max(1, min(AUTO_WIDTH, by_memory, cores // CORES_PER_FOLD))


def train_concurrently(
    train_unit: Callable[[Any, str, int], Any],
    plan: Any,
    units: Sequence[Unit],
    workers: int,
    progress: Callable[[str, int, int], None] | None = None,
    *,
    sharing: int | None = None,
) -> None:
    """`train_unit(plan, arm, fold)` for every unit, `workers` at a time in processes of their own; returns when all
    are done. The first unit that fails stops the others and raises (the finished ones stay in the work folder, so
    a run started again trains only what is left). `sharing`: how many such processes share this process's cores
    in all (default `workers`; more when several callers start them, as the flow's tasks do)."""
    if not units:
        return
    workers = min(workers, len(units))
    threads = max(1, torch.get_num_threads() // (sharing or workers))  # the cores shared out, not taken by each
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=_limit_threads, initargs=(threads,)
    ) as pool:
        futures = {pool.submit(train_unit, plan, arm, fold): (arm, fold) for arm, fold in units}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                arm, fold = futures[future]
                try:
                    future.result()
                except BaseException as error:
                    for other in pending:
                        other.cancel()
                    if not isinstance(error, BrokenProcessPool):
                        raise
                    raise TrainingError(
                        f"the process training {arm} fold {fold + 1} died (out of memory, killed, or, when medtl is "
                        "called from a Python script, the script has no `if __name__ == '__main__':` guard: the fold "
                        "processes are spawned, which imports the script again)",
                        fix="run again with a smaller concurrent_folds (1: one fold at a time), or guard the script; "
                        "finished folds are kept and not trained again",
                    ) from error
                if progress is not None:
                    progress(f"{arm} fold {fold + 1} done", len(futures) - len(pending), len(futures))


def _limit_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    heap_for_arrays_from_now()  # spawned with the environment of a Dask worker, where there is one
