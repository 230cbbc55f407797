"""GPU scale-out check: pipelines.train.train_flow with its CV folds
as Prefect tasks on a Dask LocalCluster whose worker(s) hold the resource GPU=1, against a real loopback Prefect
server, versus the same flow run sequentially in-process. Records per fold the worker, process and device, the
fold's time span (to show one fold at a time holds the GPU), and wall times. Writes one JSON file.

    python benchmarks/gpu_dask/bench_gpu_dask_folds.py --device cuda --out benchmarks/results/gpu_dask_folds.json

The baseline is the same flow in one process; a CPU run (--device cpu) rehearses the same code path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for entry in (str(REPO), str(REPO / "tests"), str(HERE)):
    if entry not in sys.path:
        sys.path.insert(0, entry)
# Dask worker processes are spawned: they find the repository, the test support and the probe through PYTHONPATH.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO), str(HERE)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
)


def gpu_sampler(stop: threading.Event, samples: list) -> None:
    """Every 0.5 s, which processes hold a CUDA context (nvidia-smi), while the runs go on."""
    if not shutil.which("nvidia-smi"):
        return
    while not stop.is_set():
        try:
            text = subprocess.run(
                ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=5, check=False,
            ).stdout  # fmt: skip
            pids = sorted({line.split(",")[0].strip() for line in text.splitlines() if line.strip()})
            samples.append((time.time(), pids))
        except (OSError, subprocess.SubprocessError):
            pass
        stop.wait(0.5)


def max_concurrency(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def max_overlap_seconds(spans: list[tuple[float, float]]) -> float:
    worst = 0.0
    for i, (s1, e1) in enumerate(spans):
        for s2, e2 in spans[i + 1 :]:
            worst = max(worst, min(e1, e2) - max(s1, s2))
    return round(worst, 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--patients", type=int, default=24)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--force-gpu-annotation",
        action="store_true",
        help="CPU rehearsal: annotate the fold tasks with GPU=1 although training is on the CPU",
    )
    parser.add_argument("--skip-two-workers", action="store_true")
    parser.add_argument("--budget-s", type=float, default=240, help="skip the optional run when past this")
    args = parser.parse_args()
    t_begin = time.time()

    import fold_probe
    import pandas as pd
    import torch
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_dask import DaskTaskRunner

    import pipelines.train as train_module
    from pipelines.runners import GPU
    from pipelines.server import local_prefect_server
    from pipelines.train import TrainParameters, train_flow
    from support.trained import ingested_cohort, signing_key, write_tiny_config

    report: dict = {
        "check": "train_flow folds as Prefect tasks on a Dask LocalCluster with GPU=1 worker resources",
        "device_requested": args.device,
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "patients": args.patients,
        "folds": args.folds,
        "epochs": args.epochs,
        "runs": {},
        "errors": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        report["total_seconds"] = round(time.time() - t_begin, 2)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")

    if args.force_gpu_annotation:  # rehearsal only: exercise the resource path without a GPU
        from pipelines import runners

        train_module.needs_gpu = lambda on_gpu: runners.needs_gpu(True)
        report["forced_gpu_annotation"] = True

    work = Path(tempfile.mkdtemp(prefix="medtl-gpu-dask-"))
    t0 = time.time()
    dataset = ingested_cohort(work, "cohort", patients=args.patients, seed=5)
    report["ingest_seconds"] = round(time.time() - t0, 2)
    config = write_tiny_config(
        work / "train.yaml", cv={"n_folds": args.folds}, seed=5, final_model="ensemble", device=args.device,
        epochs=args.epochs, batch_size=args.batch_size, early_stopping={"min_epochs": args.epochs},
    )  # fmt: skip
    report["config"] = (work / "train.yaml").read_text(encoding="utf-8")

    stop, samples = threading.Event(), []
    sampler = threading.Thread(target=gpu_sampler, args=(stop, samples), daemon=True)
    sampler.start()

    def run(name: str, flow_callable, *, in_process_probe: bool) -> None:
        probe_dir = work / f"probe-{name}"
        os.environ["MEDTL_PROBE_DIR"] = str(probe_dir)  # the worker processes inherit it when their cluster starts
        if in_process_probe:
            fold_probe.patch()
        params = TrainParameters(dataset=dataset, out=work / f"artifact-{name}", config=config)
        entry: dict = {}
        report["runs"][name] = entry
        t_start = time.time()
        try:
            summary = flow_callable(params)
            entry["wall_seconds"] = round(time.time() - t_start, 2)
            entry["oof_auc"] = summary["oof_auc"]
            entry["flow_folds"] = summary["folds"]
        except Exception as error:  # record and go on to the next run
            entry["wall_seconds"] = round(time.time() - t_start, 2)
            entry["error"] = f"{type(error).__name__}: {error}"[:2000]
            report["errors"].append(f"{name}: {entry['error']}")
        t_end = time.time()
        records = [json.loads(p.read_text()) for p in sorted(probe_dir.glob("*.json"))] if probe_dir.exists() else []
        records.sort(key=lambda r: r["start"])
        for r in records:
            r["start_offset_s"] = round(r.pop("start") - t_start, 3)
            r["end_offset_s"] = round(r.pop("end") - t_start, 3)
            r["seconds"] = round(r["seconds"], 3)
        entry["fold_records"] = records
        spans = [(r["start_offset_s"], r["end_offset_s"]) for r in records]
        entry["fold_to_worker"] = {f"{r['arm']}-fold{r['fold']}": r["worker"] for r in records}
        entry["fold_to_device"] = {f"{r['arm']}-fold{r['fold']}": r["plan_device"] for r in records}
        entry["workers_used"] = sorted({r["worker"] for r in records})
        entry["pids_used"] = sorted({r["pid"] for r in records})
        entry["max_folds_at_once"] = max_concurrency(spans) if spans else None
        entry["max_pairwise_overlap_s"] = max_overlap_seconds(spans) if spans else None
        entry["sum_fold_seconds"] = round(sum(r["seconds"] for r in records), 2)
        window = [pids for t, pids in samples if t_start <= t <= t_end]
        if window:
            entry["nvidia_smi_samples"] = len(window)
            entry["nvidia_smi_max_processes_with_context"] = max(len(p) for p in window)
            entry["nvidia_smi_pids_seen"] = sorted({pid for p in window for pid in p})
        oof = work / f"artifact-{name}" / "predictions" / "oof.parquet"
        if oof.exists():
            entry["_oof"] = str(oof)
        print(f"[{name}] wall {entry['wall_seconds']} s, workers {entry['workers_used']}, "
              f"max at once {entry['max_folds_at_once']}, error {entry.get('error')}", flush=True)  # fmt: skip
        save()

    def dask_runner(n_workers: int, threads_per_worker: int) -> DaskTaskRunner:
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={"n_workers": n_workers, "threads_per_worker": threads_per_worker, "processes": True,
                            "resources": {GPU: 1}, "dashboard_address": None, "preload": ["fold_probe"]},
        )  # fmt: skip

    try:
        with signing_key(work / "key.pem"), local_prefect_server(work / "prefect-home") as url:
            os.environ["PREFECT_API_URL"] = url  # the Dask worker processes read it from their environment
            with temporary_settings(updates={PREFECT_API_URL: url}):
                # 1. sequential, in this process (the flow's default: ThreadPoolTaskRunner(max_workers=1))
                run("sequential_in_process", train_flow, in_process_probe=True)
                # 2. one worker process, two threads, GPU=1: the resource alone keeps folds one at a time
                run("dask_1worker_2threads_gpu1", train_flow.with_options(task_runner=dask_runner(1, 2)),
                    in_process_probe=False)  # fmt: skip
                # 3. two worker processes, each GPU=1 (as if two GPUs; here both share the one GPU)
                if not args.skip_two_workers and time.time() - t_begin < args.budget_s:
                    run("dask_2workers_gpu1_each", train_flow.with_options(task_runner=dask_runner(2, 1)),
                        in_process_probe=False)  # fmt: skip
                else:
                    report["runs"]["dask_2workers_gpu1_each"] = {"skipped": "time budget or flag"}
            os.environ.pop("PREFECT_API_URL", None)
    except Exception as error:
        report["errors"].append(f"harness: {type(error).__name__}: {error}"[:2000])
    finally:
        stop.set()

    # Same split, same seed: do the out-of-fold predictions agree between the sequential and the Dask runs?
    base = report["runs"].get("sequential_in_process", {}).get("_oof")
    for name, entry in report["runs"].items():
        path = entry.pop("_oof", None)
        if base and path and name != "sequential_in_process":
            a = pd.read_parquet(base).sort_values("scan_id", ignore_index=True)
            b = pd.read_parquet(path).sort_values("scan_id", ignore_index=True)
            entry["oof_same_scans_and_folds_as_sequential"] = bool(
                a.scan_id.tolist() == b.scan_id.tolist() and a.fold.tolist() == b.fold.tolist()
            )
            entry["oof_max_abs_probability_diff_vs_sequential"] = float((a.probability - b.probability).abs().max())
    runs = report["runs"]
    seq = runs.get("sequential_in_process", {}).get("wall_seconds")
    for name, entry in runs.items():
        if seq and entry.get("wall_seconds") and name != "sequential_in_process" and "error" not in entry:
            entry["wall_ratio_vs_sequential"] = round(entry["wall_seconds"] / seq, 3)
    save()
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({k: v for k, v in report.items() if k not in ("runs", "config")}, indent=2, default=str))
    for name, entry in runs.items():
        print(name, {k: entry.get(k) for k in ("wall_seconds", "fold_to_worker", "fold_to_device", "max_folds_at_once",
                                                "max_pairwise_overlap_s", "error", "skipped")})  # fmt: skip


if __name__ == "__main__":
    main()
