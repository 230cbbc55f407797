"""Monitoring quality on simulated nights: false alarms per undrifted night and detection of real shifts, medtl's
rule (Holm over the night's checks at alpha, plus a minimum effect) against the naive rule (alert when any check's
own p-value is below alpha), on the same nights and the same checks.

The site is simulated by tests/support/drift.py (CT and some MR, three vendors, a few slice thicknesses, a binary
finding in 30% of scans); every seed draws a fresh training reference. Undrifted: SEEDS x NIGHTS nights of 5 to 80
scans. Shifts: after 30 undrifted nights of 40 scans, one night of 40 scans with intensities +20 / +40 HU, another
vendor, 0.6 mm slices, or a positive rate of 60% instead of 30%, each over SEEDS seeds.

    python benchmarks/bench_monitor.py --out benchmarks/results/monitor.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere, without installing medtl
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the simulated site the tests use


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--nights", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/monitor.json"))
    args = parser.parse_args()
    from medtl.monitoring.monitor import assess, default_settings
    from support import drift

    settings = default_settings()

    def naive(night) -> bool:
        return any(c.p_value < settings.alpha for c in night.checks)

    started = time.perf_counter()
    undrifted = {"nights": 0, "medtl_alarms": 0, "naive_alarms": 0}
    for seed in range(args.seeds):
        rng = np.random.default_rng(1000 + seed)
        ref = drift.reference(rng)
        nights = [drift.night(rng, label, int(rng.integers(5, 81))) for label in drift.labels(args.nights)]
        assessed = assess(nights, ref, settings)
        undrifted["nights"] += len(assessed)
        undrifted["medtl_alarms"] += sum(n.status == "alert" for n in assessed)
        undrifted["naive_alarms"] += sum(naive(n) for n in assessed)
    shifts = {
        "intensity +20 HU": drift.Shift(intensity=20.0),
        "intensity +40 HU": drift.Shift(intensity=40.0),
        "another vendor": drift.Shift(manufacturer="canon"),
        "0.6 mm slices": drift.Shift(slice_thickness=0.6),
        "positive rate 60%": drift.Shift(prevalence=0.6),
    }
    detected = {}
    for name, shift in shifts.items():
        found = {"nights": 0, "medtl": 0, "naive": 0}
        for seed in range(args.seeds):
            rng = np.random.default_rng(2000 + seed)
            ref = drift.reference(rng)
            labels = drift.labels(31)
            nights = [drift.night(rng, label, 40) for label in labels[:-1]]
            latest = assess([*nights, drift.night(rng, labels[-1], 40, shift)], ref, settings)[-1]
            found["nights"] += 1
            found["medtl"] += latest.status == "alert"
            found["naive"] += naive(latest)
        detected[name] = found
    result = {
        "settings": settings.model_dump(),
        "undrifted": undrifted | {
            "medtl_rate": undrifted["medtl_alarms"] / undrifted["nights"],
            "naive_rate": undrifted["naive_alarms"] / undrifted["nights"],
        },
        "detected": detected,
        "seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
