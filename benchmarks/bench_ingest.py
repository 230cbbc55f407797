"""Ingest throughput and memory: medtl against plain pydicom and MONAI's PydicomReader, on the same series.

Each method runs in a fresh Python process (so import caches and memory do not leak between them) and reports
wall time and peak resident memory (its own and its worker processes'). The bare pydicom stack (`dcmread` +
`numpy.stack`, series by series) runs with one process and with as many processes as medtl's parallel run, so
that each medtl run is compared with the same number of processes. Every round runs every method once,
interleaved, and records the load average around it. medtl's own ingest report says which pass and which worker
step cost what (`timings`); the medians over the rounds are kept. Compare the ratios, not the absolute numbers,
which depend on the machine and its load.

    python benchmarks/bench_ingest.py --out benchmarks/results/ingest.json

Targets (issue "Ingest", part 1): medtl's full ingest (all checks, hashing, caching, preprocessing) within 1.2x
the time of the bare pydicom stack with the same number of processes, at least 2x as fast as MONAI's reader, and
peak memory for the 20-series cohort no more than twice the peak for its largest series alone. Parallel
efficiency (speed-up of N workers over one, divided by N) is reported, without a target.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from aside import SetAside


def write_cohort(
    root: Path, *, n_series: int, size: int, seed: int, slices: tuple[int, int] = (40, 96), first: int = 0
) -> list[dict]:
    """Uncompressed axial CT-like series with varied slice counts (from slices[0] to slices[1]); returns one
    descriptor per series. `first` numbers the series (folders, patient ids) after those of an earlier call."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(seed)
    series = []
    low, high = slices
    for index in range(first, first + n_series):
        count = int(low + ((high - low) * (index - first)) // max(1, n_series - 1))
        folder = root / f"series{index:02d}"
        folder.mkdir(parents=True)
        uid, study_uid = generate_uid(), generate_uid()
        base = rng.normal(0, 200, size=(size, size)).astype(np.int16)
        for k in range(count):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.PatientID = f"BENCH{index:03d}"
            ds.PatientName = "BENCH^SERIES"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = uid
            ds.Modality = "CT"
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [-150.0, -150.0, 2.5 * k]
            ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.PixelSpacing = [0.8, 0.8]
            ds.SliceThickness = 2.5
            ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
            ds.Rows = ds.Columns = size
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated = ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            ds.PixelData = (base + np.int16(k)).tobytes()
            pydicom.dcmwrite(folder / f"{k:04d}.dcm", ds, enforce_file_format=True)
        series.append({"folder": folder.name, "slices": count})
    return series


# -- the methods, each run in a child process ----------------------------------------------------------------------


def _stack_folder(folder: Path) -> int:
    import pydicom

    files = sorted(folder.iterdir())
    return int(np.stack([pydicom.dcmread(f).pixel_array for f in files]).shape[0])


def run_pydicom(data: Path, folders: list[str], workers: int = 1) -> int:
    """The bare read: dcmread + pixel_array + stack, one series at a time; with `workers` > 1, series are spread
    over that many forked processes (largest first, as medtl does), and only slice counts come back."""
    import pydicom  # noqa: F401  (imported before forking, as medtl is)

    if workers <= 1:
        return sum(_stack_folder(data / folder) for folder in folders)
    from multiprocessing import get_context

    ordered = sorted(folders, key=lambda f: sum(p.stat().st_size for p in (data / f).iterdir()), reverse=True)
    with get_context("fork").Pool(workers) as pool:
        return sum(pool.imap_unordered(_stack_folder, [data / folder for folder in ordered]))


def run_monai(data: Path, folders: list[str]) -> int:
    from monai.transforms import LoadImage

    loader = LoadImage(reader="PydicomReader", image_only=True)
    slices = 0
    for folder in folders:
        image = loader(str(data / folder))
        slices += int(image.shape[-1])
    return slices


def run_medtl(data: Path, folders: list[str], workers: int, out: Path) -> tuple[int, dict]:
    from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
    from medtl.ingest.pipeline import ingest_sources

    result = ingest_sources(
        [data / folder for folder in folders],
        out=out,
        pseudonymizer=Pseudonymizer(DEVELOPMENT_KEY, key_id="development"),
        workers=workers,
    )
    report_timings = getattr(result.report, "timings", None)  # absent in versions before the per-step timings
    timings = report_timings.model_dump() if report_timings is not None else {}
    return int(result.report.counts["ingested"]), timings


def child(args: argparse.Namespace) -> None:
    data, folders = Path(args.data), args.folders.split(",")
    if args.method.startswith("medtl"):
        import medtl.ingest.pipeline  # noqa: F401  (imports are not part of the measured work)
    elif args.method == "monai":
        import monai.transforms  # noqa: F401
    timings: dict = {}
    start = time.perf_counter()
    if args.method == "pydicom":
        slices = run_pydicom(data, folders, args.workers)
    elif args.method == "monai":
        slices = run_monai(data, folders)
    else:
        slices, timings = run_medtl(data, folders, args.workers, Path(args.dataset))
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    record = {"seconds": seconds, "slices": slices, "peak_rss_mb": own, "peak_child_rss_mb": children}
    print(json.dumps({**record, "timings": timings} if timings else record))


def summarise(runs: list[dict], slices: int, megabytes: float) -> dict:
    """Median seconds with the spread of the rounds; peak memory is the largest seen."""
    seconds = [run["seconds"] for run in runs]
    median = float(np.median(seconds))
    summary = {
        "seconds": median, "seconds_min": min(seconds), "seconds_max": max(seconds), "slices": runs[0]["slices"],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "peak_child_rss_mb": max(r["peak_child_rss_mb"] for r in runs),
        "slices_per_s": slices / median, "mb_per_s": megabytes / median,
    }  # fmt: skip
    if all(run.get("timings") for run in runs):
        summary["timings_median"] = median_timings([run["timings"] for run in runs])
    return summary


def median_timings(timings: list[dict]) -> dict:
    """Median seconds per pass and per worker step over the rounds (from each run's ingest report)."""
    out: dict = {
        "workers": timings[0]["workers"],
        "wall_seconds": float(np.median([t["wall_seconds"] for t in timings])),
    }
    for part in ("passes", "worker_steps"):
        names = list(dict.fromkeys(name for t in timings for name in t[part]))
        out[part] = {name: round(float(np.median([t[part].get(name, 0.0) for t in timings])), 4) for name in names}
    return out


def measure(
    method: str,
    data: Path,
    folders: list[str],
    *,
    workers: int = 1,
    dataset: Path | None = None,
    tree: Path | None = None,
) -> dict:
    """One run in a fresh process; `tree`: import medtl from that checkout instead (an earlier version)."""
    command = [sys.executable, __file__, "--child", method, "--data", str(data), "--folders", ",".join(folders)]
    command += ["--workers", str(workers), "--dataset", str(dataset or data.parent / "unused")]
    env = {**os.environ, "PYTHONPATH": str(tree)} if tree is not None else None
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ingest.json"))
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--size", type=int, default=256, help="rows = columns of each slice")
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds; each runs every method once, interleaved (median + spread)"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--delete-outputs",
        action="store_true",
        help="delete each run's output before the next run instead of setting it aside (benchmarks/aside.py)",
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        default=None,
        help="another checkout of medtl (e.g. a worktree of the previous release): its ingest runs in the same "
        "interleaved rounds, so that before/after ratios are measured under the same load",
    )
    parser.add_argument("--child", dest="method", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folders", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        child(args)
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="medtl-bench-ingest-"))
    data = workdir / "dicom"
    if data.exists():
        shutil.rmtree(data)
    series = write_cohort(data, n_series=args.series, size=args.size, seed=0)
    folders = [s["folder"] for s in series]
    total_slices = sum(s["slices"] for s in series)
    megabytes = sum(f.stat().st_size for f in data.rglob("*.dcm")) / 1e6
    largest = max(series, key=lambda s: s["slices"])["folder"]
    cpus = os.cpu_count() or 1

    methods = {
        "pydicom_stack": ("pydicom", 1),
        f"pydicom_stack_{cpus}_processes": ("pydicom", cpus),
        "monai_pydicomreader": ("monai", 1),
        "medtl_1_worker": ("medtl", 1),
        f"medtl_{cpus}_workers": ("medtl", cpus),
    }
    if args.compare_with is not None:
        methods["before_medtl_1_worker"] = ("medtl", 1)
        methods[f"before_medtl_{cpus}_workers"] = ("medtl", cpus)
    rounds: list[dict[str, dict]] = []
    load: list[list[float]] = []
    # each run's dataset moved away, not deleted, until the rounds are over (aside.py)
    with SetAside(workdir, delete=args.delete_outputs) as aside:
        for repeat in range(args.repeats):  # interleaved, so that a noisy minute hits every method alike
            runs = {}
            for name, (method, workers) in methods.items():
                dataset = workdir / f"dataset-{name}-{repeat}"
                shutil.rmtree(dataset, ignore_errors=True)
                tree = args.compare_with.resolve() if name.startswith("before_") else None
                runs[name] = measure(method, data, folders, workers=workers, dataset=dataset, tree=tree)
                aside.put(dataset)
            rounds.append(runs)
            load.append([round(value, 2) for value in os.getloadavg()])
            seconds = {name: round(run["seconds"], 3) for name, run in runs.items()}
            print(json.dumps({"round": repeat, "seconds": seconds}), flush=True)  # a run stopped early says this
    results = {name: summarise([r[name] for r in rounds], total_slices, megabytes) for name in methods}
    memory_largest = measure("medtl", data, [largest], workers=1, dataset=workdir / "mem-largest")
    memory_all = measure("medtl", data, folders, workers=1, dataset=workdir / "mem-all")

    def ratio(numerator: str, denominator: str) -> dict:
        """Per round (the two runs were minutes apart at most), then the median and spread over rounds."""
        values = [r[numerator]["seconds"] / r[denominator]["seconds"] for r in rounds]
        return {"median": float(np.median(values)), "min": min(values), "max": max(values), "rounds": values}

    parallel, bare_parallel = f"medtl_{cpus}_workers", f"pydicom_stack_{cpus}_processes"
    ratio_spread = {
        "medtl_vs_pydicom_same_processes_time": ratio(parallel, bare_parallel),
        "medtl_vs_monai_speed": ratio("monai_pydicomreader", parallel),
        "medtl_1_worker_vs_pydicom_time": ratio("medtl_1_worker", "pydicom_stack"),
        "medtl_1_worker_vs_monai_speed": ratio("monai_pydicomreader", "medtl_1_worker"),
        "medtl_vs_pydicom_1_process_time": ratio(parallel, "pydicom_stack"),
        "medtl_parallel_speedup": ratio("medtl_1_worker", parallel),
        "pydicom_parallel_speedup": ratio("pydicom_stack", bare_parallel),
    }
    if args.compare_with is not None:
        ratio_spread["speedup_over_before_1_worker"] = ratio("before_medtl_1_worker", "medtl_1_worker")
        ratio_spread[f"speedup_over_before_{cpus}_workers"] = ratio(f"before_medtl_{cpus}_workers", parallel)
    ratios = {name: value["median"] for name, value in ratio_spread.items()}
    ratios["medtl_parallel_efficiency"] = ratios["medtl_parallel_speedup"] / cpus
    ratios["pydicom_parallel_efficiency"] = ratios["pydicom_parallel_speedup"] / cpus
    ratios["peak_memory_cohort_vs_largest_series"] = memory_all["peak_rss_mb"] / memory_largest["peak_rss_mb"]
    report = {
        "benchmark": "ingest",
        "machine": {"cpus": cpus, "platform": platform.platform(), "python": platform.python_version()},
        "cohort": {"series": len(series), "slices": total_slices, "megabytes": round(megabytes, 1)},
        "largest_series_slices": max(s["slices"] for s in series),
        "repeats": args.repeats,
        "outputs_between_runs": "deleted" if args.delete_outputs else "set aside (benchmarks/aside.py)",
        "load_average_after_each_round": load,
        "methods": results,
        "ratio_spread": ratio_spread,
        "memory": {"largest_series_alone": memory_largest, "whole_cohort": memory_all},
        "ratios": ratios,
        "targets": {
            "medtl_vs_pydicom_same_processes_time": "<= 1.2",
            "medtl_vs_monai_speed": ">= 2.0",
            "peak_memory_cohort_vs_largest_series": "<= 2.0",
        },
        "met": {
            "medtl_vs_pydicom_same_processes_time": ratios["medtl_vs_pydicom_same_processes_time"] <= 1.2,
            "medtl_vs_monai_speed": ratios["medtl_vs_monai_speed"] >= 2.0,
            "peak_memory_cohort_vs_largest_series": ratios["peak_memory_cohort_vs_largest_series"] <= 2.0,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"ratios": ratios, "met": report["met"]}, indent=2))
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
