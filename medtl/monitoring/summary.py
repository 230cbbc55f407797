"""A night in aggregate numbers (counts, shares, medians, rates): what the status file and the page show over time."""

from __future__ import annotations

import numpy as np

from medtl.contracts.monitoring import EndpointSummary, NightSummary
from medtl.monitoring import quantities as q
from medtl.monitoring.nights import Night


def summarize(night: Night, endpoints: list[str], image_kind: str) -> NightSummary:
    inputs, scores = night.inputs, night.scores
    n = len(scores)
    ndim = q.dimensions(inputs, image_kind)
    medians = {
        column: [float(np.median(q.axis_values(inputs, column, axis, ndim))) for axis in range(ndim)] if ndim else []
        for column in ("spacing", "shape")
    }
    return NightSummary(
        n_scans=n,
        n_with_inputs=len(inputs),
        modalities=q.categories(inputs, "modality"),
        manufacturers=q.categories(inputs, "manufacturer"),
        spacing_median=medians["spacing"],
        shape_median=medians["shape"],
        intensity_mean_median=float(np.median(inputs["intensity_mean"].to_numpy(dtype=float))) if len(inputs) else None,
        flag_rates={flag: q.flag_count(scores, flag) / n for flag in q.MONITORED_FLAGS} if n else {},
        abstention_rate=q.abstained(scores) / n if n else 0.0,
        endpoints=[_endpoint(night, index, end) for index, end in enumerate(endpoints)],
    )


def _endpoint(night: Night, index: int, end: str) -> EndpointSummary:
    values = q.endpoint_scores(night.scores, index)
    k, decided = q.endpoint_decisions(night.scores, index)
    p10, p50, p90 = (float(v) for v in np.percentile(values, [10, 50, 90])) if len(values) else (None, None, None)
    return EndpointSummary(
        endpoint=end,
        n_scored=len(values),
        score_p10=p10,
        score_median=p50,
        score_p90=p90,
        positive_rate=k / decided if decided else None,
        n_decided=decided,
    )
