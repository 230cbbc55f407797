"""What orchestration costs and buys: the end-to-end Prefect flow against calling the same medtl functions directly
(ingest, train, evaluate; same cohort, config and seed), and the scoring flow with its chunks on one vs two Dask
worker processes (plus Prefect's default thread runner), all in one run against one real loopback Prefect server.

Server start-up is not counted (a site's server is already running). Dask arms two ways: `score_dask_N` with
`on_dask(n_workers=N)`, which starts a LocalCluster per flow run (its start-up, the workers' imports and their
first model load inside the run's time), and `score_running_N` on a LocalCluster started once before the rounds,
as at a site (its start-up recorded apart). Medians over interleaved repeats with min and max; ratios only: these
machines are shared and noisy.

    python benchmarks/bench_orchestration.py --out benchmarks/results/orchestration.json
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
import yaml

CONFIG = {
    "model": {"backbone": "resnet18", "weights": "none"}, "strategy": {"name": "full"}, "arms": [], "epochs": 2,
    "batch_size": 8, "cv": {"n_folds": 3}, "early_stopping": {"min_epochs": 2}, "seed": 0, "final_model": "ensemble",
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=24)
    parser.add_argument("--incoming", type=int, default=60, help="patients in the batch to score")
    parser.add_argument("--chunk-size", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/orchestration.json"))
    args = parser.parse_args()

    from medtl.artifacts import generate_signing_key
    from medtl.contracts import PreprocessingSpec
    from medtl.datasets.synth import make_cohort
    from medtl.evaluation.evaluate import evaluate
    from medtl.identity import pseudonymizer_from_env
    from medtl.ingest.pipeline import ingest_sources
    from medtl.ingest.preprocess import load_spec
    from medtl.training.config import load_config
    from medtl.training.train import train
    from pipelines.end_to_end import EndToEndParameters, end_to_end_flow
    from pipelines.runners import on_dask
    from pipelines.score import ScoreParameters, score_flow
    from pipelines.server import local_prefect_server

    work = Path(tempfile.mkdtemp(prefix="medtl-bench-orchestration-"))
    generate_signing_key(work / "key.pem")
    os.environ["MEDTL_SIGNING_KEY"] = str(work / "key.pem")
    os.environ["MEDTL_TRUSTED_KEYS"] = str(work / "key.pem.pub")  # the site's trust anchor: this run's pipeline key
    spec = PreprocessingSpec(spatial_dims=3, target_spacing=[3.0, 3.0, 6.0], target_shape=[16, 16, 8])
    (work / "spec.json").write_text(spec.model_dump_json(), encoding="utf-8")
    (work / "train.yaml").write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    make_cohort(work / "cohort", patients=args.patients, seed=7)
    make_cohort(work / "incoming", patients=args.incoming, seed=8)
    sources, labels = [work / "cohort" / "dicom"], work / "cohort" / "labels.csv"

    def direct(run: Path) -> None:
        ingest_sources(sources, out=run / "dataset", labels=labels, spec=load_spec(work / "spec.json"),
                       pseudonymizer=pseudonymizer_from_env(allow_development_key=True))  # fmt: skip
        train(run / "dataset", load_config(work / "train.yaml"), run / "artifact")
        evaluate(run / "artifact", out=run / "report", dataset=run / "dataset", n_boot=200, pdf=False)

    def flow(run: Path) -> None:
        end_to_end_flow(EndToEndParameters(sources=sources, labels=labels, workdir=run, spec=work / "spec.json",
                                           config=work / "train.yaml", n_boot=200, pdf=False,
                                           allow_development_key=True))  # fmt: skip

    def timed(action, run: Path) -> float:
        shutil.rmtree(run, ignore_errors=True)
        start = time.perf_counter()
        action(run)
        return time.perf_counter() - start

    from distributed import LocalCluster
    from prefect.settings import PREFECT_API_URL, temporary_settings

    seconds: dict[str, list[float]] = {"direct": [], "flow": [], "score_threads": [], "score_dask_1": [],
                                       "score_dask_2": [], "score_running_1": [], "score_running_2": []}  # fmt: skip
    start_up: dict[str, float] = {}
    with contextlib.ExitStack() as stack, local_prefect_server(work / "prefect-home") as url:
        os.environ["PREFECT_API_URL"] = url  # Dask worker processes read it from the environment
        with temporary_settings(updates={PREFECT_API_URL: url}):
            for repeat in range(args.repeats):  # interleaved, so drift in machine load hits both alike
                seconds["direct"].append(timed(direct, work / f"direct-{repeat}"))
                seconds["flow"].append(timed(flow, work / f"flow-{repeat}"))
            artifact = work / "flow-0" / "artifact"
            n_scans = None
            runners = {"score_threads": score_flow, "score_dask_1": on_dask(score_flow, n_workers=1),
                       "score_dask_2": on_dask(score_flow, n_workers=2)}  # fmt: skip
            for workers in (1, 2):
                started = time.perf_counter()
                cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                           dashboard_address=None))  # fmt: skip
                start_up[f"score_running_{workers}_cluster_s"] = round(time.perf_counter() - started, 2)
                runners[f"score_running_{workers}"] = on_dask(score_flow, address=cluster.scheduler_address)
            for repeat in range(args.repeats):
                for name, scoring in runners.items():
                    params = ScoreParameters(artifact=artifact, sources=[work / "incoming" / "dicom"],
                                             out=work / f"{name}-{repeat}", allow_unapproved=True,
                                             chunk_size=args.chunk_size, allow_development_key=True)  # fmt: skip
                    start = time.perf_counter()
                    summary = scoring(params)
                    seconds[name].append(time.perf_counter() - start)
                    n_scans = summary["scored"]
                    chunks = summary["chunks"]
    median = {name: float(np.median(values)) for name, values in seconds.items()}
    per_round = {name: np.array(values) for name, values in seconds.items()}

    def spread(values) -> dict:
        return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}

    report = {
        "benchmark": "orchestration",
        "cohort_patients": args.patients,
        "scored_scans": n_scans,
        "chunks": chunks,
        "repeats": args.repeats,
        "seconds": {name: {**spread(values), "rounds": values} for name, values in seconds.items()},
        "start_up": start_up,
        "ratio_flow_vs_direct": spread(per_round["flow"] / per_round["direct"]),
        "scans_per_s_median": {name: round(n_scans / median[name], 2) for name in runners},
        "ratio_dask2_vs_dask1_throughput": spread(per_round["score_dask_1"] / per_round["score_dask_2"]),
        "ratio_running2_vs_running1_throughput": spread(per_round["score_running_1"] / per_round["score_running_2"]),
        "ratio_running2_vs_threads_throughput": spread(per_round["score_threads"] / per_round["score_running_2"]),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "note": "medians over interleaved repeats (min-max); score_dask_N start a LocalCluster per run (inside its "
        "time), score_running_N use one started before the rounds (start_up)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "seconds"}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
