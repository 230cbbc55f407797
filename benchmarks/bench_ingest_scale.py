"""Ingest at scale: the ingest flow with its series decoded on a local Dask cluster against local worker processes,
on a synthetic archive (`medtl synth-archive`), with the same manifest asserted for every arm.

Arms, interleaved per round so that drift in machine load hits all alike, each a full ingest into a new folder:
  local_1, local_N   ingest_sources with 1 and N worker processes (the library, no Prefect)
  dask_1, dask_N     the ingest flow on a running Dask LocalCluster of 1 and N worker processes (one thread each),
                     started once before the rounds, as a site's cluster is already up (its start-up is recorded
                     apart; a first warm-up round, where the workers import medtl, is not counted); the flow's own
                     process reads headers and preprocesses with the same N processes
Every arm's manifest (sorted by scan id) must equal local_1's, and every file's outcome must be the archive's
expected.csv. Reported: medians over rounds with min and max; parallel efficiency t1 / (N x tN) for both; Dask
throughput over local. Prefect server start-up is not counted (a site's server is already running).

    python benchmarks/bench_ingest_scale.py --series 400 --workers 2 --out benchmarks/results/ingest_scale.json

Server start-up is not counted either.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _spread(values: list[float]) -> dict:
    return {"median": round(float(np.median(values)), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "rounds": [round(v, 3) for v in values]}  # fmt: skip


def _fates(dataset: Path) -> dict[str, tuple[str, str]]:
    from medtl.contracts import read_json
    from medtl.contracts.ingest import IngestReport

    report = read_json(IngestReport, dataset / "ingest_report.json")
    index = pd.read_csv(dataset / "private" / "source_index.csv")
    names = dict(zip(index.file_id, index.relative_path, strict=True))
    return {names[record.file_id]: (record.status, record.reason_code or "") for record in report.files}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=400)
    parser.add_argument("--matrix", type=int, default=64)
    parser.add_argument("--slices", type=int, nargs=2, default=[8, 24])
    parser.add_argument("--workers", type=int, default=2, help="N: worker processes of the parallel arms")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="rounds run first and not counted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ingest_scale.json"))
    args = parser.parse_args()

    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from medtl.datasets.synth.archive import SOURCE, ArchiveOptions, iter_expected, make_archive
    from medtl.identity import pseudonymizer_from_env
    from medtl.ingest.pipeline import ingest_sources
    from pipelines.ingest import IngestParameters, ingest_flow
    from pipelines.runners import on_dask
    from pipelines.server import local_prefect_server

    work = Path(tempfile.mkdtemp(prefix="medtl-bench-ingest-scale-"))
    n = args.workers
    options = ArchiveOptions(series=args.series, seed=args.seed, slices=tuple(args.slices), matrix=args.matrix)
    start = time.perf_counter()
    summary = make_archive(work / "archive", options, workers=n)
    synth_seconds = time.perf_counter() - start
    source = work / "archive" / SOURCE
    size_mb = sum(path.stat().st_size for path in source.rglob("*") if path.is_file()) / 1e6
    expected = {row["relative_path"]: (row["status"], row["reason_code"]) for row in iter_expected(work / "archive")}
    pseudonymizer = pseudonymizer_from_env(allow_development_key=True)

    def local(workers: int):
        return lambda out: ingest_sources([source], out=out, pseudonymizer=pseudonymizer, workers=workers)

    def dask(workers: int, address: str):
        flow = on_dask(ingest_flow, address=address)
        return lambda out: flow(IngestParameters(sources=[source], out=out, workers=workers,
                                                 allow_development_key=True))  # fmt: skip

    seconds: dict[str, list[float]] = {}
    reference = None
    start_up: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(local_prefect_server(work / "prefect-home"))
        os.environ["PREFECT_API_URL"] = url  # Dask worker processes read it from the environment
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        arms = {"local_1": local(1), f"local_{n}": local(n)}
        for workers in sorted({1, n}):
            start = time.perf_counter()
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                       dashboard_address=None))  # fmt: skip
            start_up[f"dask_{workers}_cluster_s"] = round(time.perf_counter() - start, 2)
            arms[f"dask_{workers}"] = dask(workers, cluster.scheduler_address)
        seconds = {name: [] for name in arms}
        for round_number in range(args.warmup + args.rounds):
            for name, run in arms.items():
                out = work / f"{name}-{round_number}"
                start = time.perf_counter()
                run(out)
                if round_number >= args.warmup:  # warm-up: the workers' first imports, the file cache
                    seconds[name].append(time.perf_counter() - start)
                manifest = pd.read_parquet(out / "manifest.parquet").sort_values("scan_id", ignore_index=True)
                if reference is None:
                    reference = manifest
                    assert _fates(out) == expected, "ingest did not meet expected.csv"
                pd.testing.assert_frame_equal(manifest, reference)  # the same manifest, row for row
                shutil.rmtree(out)
    median = {name: float(np.median(values)) for name, values in seconds.items()}
    per_round = {name: np.array(values) for name, values in seconds.items()}
    archive = {"series": args.series, "files": summary.files, "megabytes": round(size_mb, 1), "matrix": args.matrix,
               "slices": args.slices, "counts": summary.counts, "transfer_syntaxes": summary.syntaxes,
               "scans": len(reference)}  # fmt: skip
    report = {
        "benchmark": "ingest_scale",
        "archive": archive,
        "synth_seconds": round(synth_seconds, 2),
        "synth_files_per_s": round(summary.files / synth_seconds, 1),
        "workers": n,
        "start_up": start_up,
        "seconds": {name: _spread(values) for name, values in seconds.items()},
        "files_per_s_median": {name: round(summary.files / value, 1) for name, value in median.items()},
        "ratios": {
            "parallel_efficiency_local": _spread(list(per_round["local_1"] / (n * per_round[f"local_{n}"]))),
            "parallel_efficiency_dask": _spread(list(per_round["dask_1"] / (n * per_round[f"dask_{n}"]))),
            "dask_throughput_vs_local": _spread(list(per_round[f"local_{n}"] / per_round[f"dask_{n}"])),
        },
        "same_manifest_all_arms": True,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "note": "medians over interleaved rounds (min-max); ratios per round; Dask clusters started once before the "
        "rounds (start_up) and one warm-up round not counted (the workers' first imports); shared machine: compare "
        "ratios only",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("archive", "synth_seconds", "files_per_s_median", "ratios")}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
