"""Scoring throughput: `medtl score` against a bare loop (load the preprocessed tensors, model(x)), same model,
same batch size, same scans, one run.

The compared number is medtl's scoring stage on the same preprocessed tensors the bare loop loads: the
out-of-distribution checks (input flags and the feature distance), the ensemble prediction, the decision and
writing scores.parquet. Also reported, for information: the whole `medtl score` command cold (ingest of the DICOM
included) and warm (a re-run whose ingest is served from the cache but still re-hashes every input file).

    python benchmarks/bench_scoring.py --out benchmarks/results/scoring.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scoring.json"))
    args = parser.parse_args()
    from medtl.artifacts import generate_signing_key
    from medtl.contracts import PreprocessingSpec, read_table, write_table
    from medtl.contracts.evaluation import ScoreRow
    from medtl.contracts.ingest import ManifestRow
    from medtl.datasets.synth import make_cohort
    from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
    from medtl.ingest.cache import ScanCache
    from medtl.ingest.pipeline import ingest_sources
    from medtl.ingest.preprocess import spec_hash
    from medtl.models.loaded import load_model
    from medtl.scoring.score import prepare, score, score_chunk
    from medtl.training.config import TrainConfig
    from medtl.training.train import train

    work = Path(tempfile.mkdtemp(prefix="medtl-bench-score-"))
    generate_signing_key(work / "key.pem")
    os.environ["MEDTL_SIGNING_KEY"] = str(work / "key.pem")
    os.environ["MEDTL_TRUSTED_KEYS"] = str(work / "key.pem.pub")  # the site's trust anchor: this run's pipeline key
    pseudonymizer = Pseudonymizer(DEVELOPMENT_KEY, key_id="development")
    spec = PreprocessingSpec(spatial_dims=3, target_spacing=[1.5, 1.5, 5.0], target_shape=[32, 32, 16])
    make_cohort(work / "dev", patients=16, seed=1)
    ingest_sources([work / "dev" / "dicom"], out=work / "dev-data", labels=work / "dev" / "labels.csv", spec=spec,
                   pseudonymizer=pseudonymizer)  # fmt: skip
    config = TrainConfig.model_validate(
        {"model": {"backbone": "monai_resnet10", "weights": "none"}, "strategy": {"name": "full"}, "arms": [],
         "epochs": 1, "batch_size": 8, "cv": {"n_folds": 2}, "early_stopping": {"min_epochs": 1},
         "final_model": "refit"}
    )  # fmt: skip
    train(work / "dev-data", config, work / "artifact")
    make_cohort(work / "new", patients=args.patients, seed=2)
    sources = [work / "new" / "dicom"]
    start = time.perf_counter()
    cold = score(work / "artifact", sources, out=work / "scores", pseudonymizer=pseudonymizer, allow_unapproved=True,
                 batch_size=args.batch_size)  # fmt: skip
    cold_seconds = time.perf_counter() - start
    (work / "scores" / "scores.parquet").unlink()
    start = time.perf_counter()
    warm = score(work / "artifact", sources, out=work / "scores", pseudonymizer=pseudonymizer, allow_unapproved=True,
                 batch_size=args.batch_size)  # fmt: skip
    warm_seconds = time.perf_counter() - start
    manifest = read_table(ManifestRow, work / "scores" / "ingest" / "manifest.parquet")
    volumes = manifest[manifest.image_kind == "volume"]
    scorer = prepare(work / "artifact", allow_unapproved=True)
    cache, key = ScanCache(work / "scores" / "ingest"), spec_hash(spec)
    model = load_model(work / "artifact")
    network = model.networks[0]
    paths = [cache.dataset_root / cache.preprocessed_relpath(h, key) for h in volumes.pixel_hash]

    def stage() -> float:
        start = time.perf_counter()
        rows = score_chunk(
            scorer, work / "scores" / "ingest", volumes, policy="flag", tta=False, batch_size=args.batch_size
        )
        write_table(ScoreRow, pd.DataFrame(rows), work / "stage-scores.parquet")
        return time.perf_counter() - start

    def bare() -> float:  # the same model and batch on the same preprocessed tensors, nothing else
        start = time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(paths), args.batch_size):
                batch = torch.stack([torch.from_numpy(np.load(p)) for p in paths[i : i + args.batch_size]])
                torch.softmax(network(batch.to(model.device)), dim=1).cpu()
        return time.perf_counter() - start

    timings: dict[str, list[float]] = {"stage": [], "bare": []}
    for _ in range(args.repeats):  # alternate, keep the fastest of each: machine noise hits both alike
        timings["bare"].append(bare())
        timings["stage"].append(stage())
    stage_seconds, bare_seconds = min(timings["stage"]), min(timings["bare"])
    n = len(volumes)
    report = {
        "benchmark": "scoring",
        "machine": {
            "cpus": os.cpu_count(),
            "device": str(model.device),
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
        "settings": {"scans": n, "batch_size": args.batch_size, "model": "monai_resnet10 3D, 1x32x32x16 input"},
        "scans_per_s": {
            "medtl_scoring_stage": n / stage_seconds,
            "bare_loop": n / bare_seconds,
            "medtl_command_warm": warm.scored / warm_seconds,
            "medtl_command_cold_end_to_end": cold.scored / cold_seconds,
        },
        "ratio_medtl_stage_vs_bare": (n / stage_seconds) / (n / bare_seconds),
        "target": ">= 0.8",
    }
    report["met"] = report["ratio_medtl_stage_vs_bare"] >= 0.8
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("scans_per_s", "ratio_medtl_stage_vs_bare", "met")}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
