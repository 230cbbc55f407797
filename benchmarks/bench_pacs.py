"""PACS retrieval throughput: medtl's pull (query, streamed retrieval, instance counting, staging, watermark)
against a bare dicomweb-client loop, same Orthanc, same series, one run. DIMSE (C-GET) is measured beside them,
as a ratio to medtl's DICOMweb pull (target >= 0.5x).

Needs Orthanc with its DICOMweb plugin (Debian: orthanc, orthanc-dicomweb); the script starts one on loopback with
a temporary storage folder and stops it by process id.

    python benchmarks/bench_pacs.py --out benchmarks/results/pacs.json
    python benchmarks/bench_pacs.py --pacs-nodelay --out benchmarks/results/pacs_nodelay.json

Ratios are taken per round (the three arms of a round run back to back) and reported as median and range.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, without installing medtl
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the Orthanc launcher the tests use


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pacs.json"))
    parser.add_argument(
        "--pacs-nodelay", action="store_true",
        help="start Orthanc with TCP_NODELAY=1 (DCMTK reads it): how much of C-GET's wait is the PACS's Nagle delay",
    )  # fmt: skip
    args = parser.parse_args()
    if args.pacs_nodelay:
        os.environ["TCP_NODELAY"] = "1"  # inherited by the Orthanc process only matters there

    import pydicom
    from dicomweb_client.api import DICOMwebClient
    from dicomweb_client.session_utils import create_session_from_user_pass

    from medtl.datasets.synth import make_cohort
    from medtl.sources.pull import Puller, open_remote
    from medtl.sources.query import PacsQuery
    from medtl.sources.state import PullState
    from support.orthanc import PASSWORD, USER, Orthanc, dicom_files

    work = Path(tempfile.mkdtemp(prefix="medtl-bench-pacs-"))
    os.environ.update(MEDTL_PACS_USERNAME=USER, MEDTL_PACS_PASSWORD=PASSWORD)
    make_cohort(work / "cohort", patients=args.patients, seed=3)
    files = dicom_files(work / "cohort" / "dicom")
    server = Orthanc(work / "orthanc").start()
    try:
        server.upload(files)
        total_bytes = sum(path.stat().st_size for path in files)
        series = open_remote(server.dicomweb_uri).find_series(PacsQuery())

        def bare_dicomweb() -> int:
            """What a script would do: one client, retrieve each series, write each instance."""
            client = DICOMwebClient(server.dicomweb_uri.removeprefix("dicomweb+"),
                                    session=create_session_from_user_pass(USER, PASSWORD))  # fmt: skip
            target = work / "bare"
            count = 0
            for item in series:
                folder = target / item.series_uid
                folder.mkdir(parents=True, exist_ok=True)
                for number, dataset in enumerate(client.iter_series(item.study_uid, item.series_uid)):
                    pydicom.dcmwrite(folder / f"{number}.dcm", dataset, enforce_file_format=True)
                    count += 1
            shutil.rmtree(target)
            return count

        def medtl_pull(uri: str) -> int:
            source = open_remote(uri)
            state_dir = work / "state"
            shutil.rmtree(state_dir, ignore_errors=True)
            puller = Puller(source, work / "staging", state=PullState.open(state_dir, source.location, "0" * 64))
            count = 0
            for batch in puller.batches(puller.plan(PacsQuery())):  # the query is timed too
                count += sum(1 for _ in batch.folder.rglob("*.dcm"))
                puller.commit(batch)
            return count

        runs = {"bare_dicomweb_client": bare_dicomweb, "medtl_dicomweb": lambda: medtl_pull(server.dicomweb_uri),
                "medtl_dimse_c_get": lambda: medtl_pull(server.dimse_uri)}  # fmt: skip
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        counts: dict[str, int] = {}
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits all alike
            for name, run in runs.items():
                start = time.perf_counter()
                counts[name] = run()
                seconds[name].append(time.perf_counter() - start)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
                "max": round(max(values), 3)}  # fmt: skip

    def ratios(faster: str, slower: str) -> dict[str, float]:
        """Per round (the arms of one round ran back to back under the same load), then median and range."""
        return spread([a / b for a, b in zip(seconds[faster], seconds[slower], strict=True)])

    median = {name: statistics.median(values) for name, values in seconds.items()}
    result = {
        "benchmark": "pacs_retrieval",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "cohort": {"patients": args.patients, "series": len(series), "instances": len(files), "bytes": total_bytes},
        "pacs_tcp_nodelay": args.pacs_nodelay,
        "instances_received": counts,
        "rounds": args.repeats,
        "seconds": {name: spread(values) for name, values in seconds.items()},
        "instances_per_second_median": {name: round(len(files) / value, 1) for name, value in median.items()},
        "ratio_medtl_dicomweb_vs_bare": ratios("bare_dicomweb_client", "medtl_dicomweb"),
        "ratio_dimse_vs_medtl_dicomweb": ratios("medtl_dicomweb", "medtl_dimse_c_get"),
        "ratio_dimse_vs_bare_dicomweb": ratios("bare_dicomweb_client", "medtl_dimse_c_get"),
        "targets": {"ratio_medtl_dicomweb_vs_bare": ">= 0.8", "ratio_dimse_vs_medtl_dicomweb": ">= 0.5"},
    }
    result["met"] = {
        "ratio_medtl_dicomweb_vs_bare": result["ratio_medtl_dicomweb_vs_bare"]["median"] >= 0.8,
        "ratio_dimse_vs_medtl_dicomweb": result["ratio_dimse_vs_medtl_dicomweb"]["median"] >= 0.5,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
