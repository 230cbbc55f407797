"""Peak memory of ingest stays bounded whatever the inputs: bombs and good files together, in a child process.

The child ingests with the default limits under an address-space cap (a safety net for the machine running the
tests, well above the bound asserted here). Its peak RSS is read by a small driver process with
getrusage(RUSAGE_CHILDREN), so that no other test's children can raise the number.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from medtl.contracts import read_json
from medtl.contracts.ingest import IngestReport

REPO = Path(__file__).resolve().parents[2]
PEAK_RSS_BOUND_MIB = 600  # the bombs, unchecked, would need >= 1.5 GiB (gzip) up to 128 GiB (NIfTI header)
ADDRESS_SPACE_CAP = 8 * 1024**3

CHILD = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
    sys.path[:0] = [{repo!r}, {tests!r}]
    from support.hostile_files import (gzip_nifti_bomb, good_series, nifti_header_lie, rle_bomb_dicom,
                                       size_lie_dicom)
    from medtl.identity import DEVELOPMENT_KEY, Pseudonymizer
    from medtl.ingest.pipeline import ingest_sources
    root = Path({root!r})
    good_series(root / "src" / "good", slices=5)
    size_lie_dicom(root / "src" / "bombs" / "size_lie.dcm")
    rle_bomb_dicom(root / "src" / "bombs" / "rle.dcm")
    gzip_nifti_bomb(root / "src" / "bombs" / "gzip.nii.gz", extra_gib=1.5)
    nifti_header_lie(root / "src" / "bombs" / "header_lie.nii")
    ingest_sources([root / "src"], out=root / "out", pseudonymizer=Pseudonymizer(DEVELOPMENT_KEY, key_id="dev"),
                   workers=1)
    """
)
DRIVER = textwrap.dedent(
    """
    import json, resource, subprocess, sys
    done = subprocess.run([sys.executable, "-c", sys.argv[1]], capture_output=True, text=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    print(json.dumps({"rc": done.returncode, "peak_kib": peak, "stderr": done.stderr[-2000:]}))
    """
)


def test_bombs_and_good_files_ingest_with_bounded_peak_memory(tmp_path):
    child = CHILD.format(cap=ADDRESS_SPACE_CAP, repo=str(REPO), tests=str(REPO / "tests"), root=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", DRIVER, child], capture_output=True, text=True, timeout=600)
    outcome = json.loads(run.stdout)
    assert outcome["rc"] == 0, outcome["stderr"]
    report = read_json(IngestReport, tmp_path / "out" / "ingest_report.json")
    assert report.counts == {"ingested": 5, "skipped": 0, "quarantined": 4}
    assert report.reasons == {"decompression_limit": 1, "image_too_large": 3}
    assert (tmp_path / "out" / "manifest.parquet").is_file()
    peak_mib = outcome["peak_kib"] / 1024
    print(f"peak RSS of the ingest child: {peak_mib:.0f} MiB")
    assert peak_mib < PEAK_RSS_BOUND_MIB
