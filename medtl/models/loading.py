"""Putting a pretrained state dict into an adapted model, with strict key checks everywhere but the head.

Why strict: a checkpoint for a slightly different architecture loads "fine" with `strict=False` and leaves half the
network random — the failure mode this project exists to prevent. Only the head may differ (it is replaced for the
task's classes); the stem convolution may differ in input channels (adapted) and 2D kernels may meet 3D ones
(inflated). Anything else is a `WeightsError` that lists the offending keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from medtl.errors import WeightsError
from medtl.models.adapt import ChannelMethod, adapt_in_channels, inflate_kernel

_SHOWN = 8


@dataclass
class LoadReport:
    """What happened to each key; JSON-serialisable for the artifact."""

    loaded: list[str] = field(default_factory=list)  # target keys (params and buffers) filled from the source
    adapted: dict[str, str] = field(default_factory=dict)  # key -> how it was transformed
    dropped_head_keys: list[str] = field(default_factory=list)  # the source's own head, not used
    new_keys: list[str] = field(default_factory=list)  # target keys left at their fresh initialisation (the head)
    defaulted: list[str] = field(default_factory=list)  # BN counters absent from old checkpoints, left at 0
    normalisation: list[str] = field(default_factory=list)  # key-layout steps applied to the file's keys

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def under(key: str, prefixes: Iterable[str]) -> bool:
    """True when `key` names `prefix` itself or something inside it (so 'features.1' does not match 'features.10')."""
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _SHOWN else "")


def _fit(
    key: str,
    value: torch.Tensor,
    target: torch.Tensor,
    channel_keys: set[str],
    method: ChannelMethod,
    report: LoadReport,
) -> torch.Tensor | None:
    """Transform one source tensor to the target's shape, or return None when it cannot fit."""
    how: list[str] = []
    if value.ndim + 1 == target.ndim and value.ndim == 4:
        value = inflate_kernel(value, target.shape[2])
        how.append(f"inflated 2D->3D (depth {target.shape[2]}, /{target.shape[2]})")
    if (
        value.shape != target.shape
        and key in channel_keys
        and value.ndim == target.ndim >= 3
        and value.shape[0] == target.shape[0]
        and value.shape[2:] == target.shape[2:]
    ):
        how.append(f"input channels {value.shape[1]}->{target.shape[1]} ({method})")
        value = adapt_in_channels(value, target.shape[1], method)
    if value.shape != target.shape:
        return None
    if how:
        report.adapted[key] = "; ".join(how)
    return value.to(dtype=target.dtype)


def transfer_state(
    model: nn.Module,
    source: Mapping[str, torch.Tensor],
    *,
    head: Iterable[str],
    channel_keys: Iterable[str],
    channel_method: ChannelMethod = "sum",
    where: str,
    what: str,
) -> LoadReport:
    """Load `source` into `model`; the head keeps its fresh initialisation and every other key must match."""
    head = tuple(head)
    channel_keys = set(channel_keys)
    target = model.state_dict()
    report = LoadReport()
    report.dropped_head_keys = sorted(k for k in source if under(k, head))
    body = {k: v for k, v in source.items() if not under(k, head)}

    unexpected = sorted(k for k in body if k not in target)
    missing = [k for k in target if k not in body and not under(k, head)]
    report.defaulted = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]

    fitted: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for key, value in body.items():
        if key not in target:
            continue
        result = _fit(key, value, target[key], channel_keys, channel_method, report)
        if result is None:
            mismatched.append(f"{key} {tuple(value.shape)} vs model {tuple(target[key].shape)}")
        else:
            fitted[key] = result

    if unexpected or missing or mismatched:
        dims_hint = ""
        if any(v.ndim == 5 for v in body.values()) and not any(t.ndim == 5 for t in target.values()):
            dims_hint = (
                " The weights are 3D but the model is 2D (or ACS, whose kernels stay 2D):"
                " build it with spatial_dims=3 and adapt_3d: inflate."
            )
        parts = [
            f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}" if unexpected else "",
            f"{len(missing)} missing key(s): {_listing(missing)}" if missing else "",
            f"{len(mismatched)} shape mismatch(es): {_listing(mismatched)}" if mismatched else "",
        ]
        raise WeightsError(
            f"{what} do not fit the model beyond its head: " + "; ".join(p for p in parts if p) + "." + dims_hint,
            where=where,
            fix="use weights trained for this exact backbone (only the classification head may differ), "
            "or set strip_prefix when the file's keys carry an extra prefix",
        )

    outcome = model.load_state_dict(fitted, strict=False)
    left_out = [k for k in outcome.missing_keys if not under(k, head) and k not in report.defaulted]
    if outcome.unexpected_keys or left_out:  # cannot happen after the checks above; refuse rather than guess
        raise WeightsError(f"internal load check failed for {what}: {outcome}", where=where)
    report.loaded = sorted(fitted)
    report.new_keys = sorted(k for k in target if under(k, head))
    return report
