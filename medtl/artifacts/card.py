"""The human-readable model card (model_card.md), rendered from metadata.json and the training metrics.

Why rendered, not written by hand: the card must say the same as the machine-readable files, and it is sealed with
them. The signing status is filled in by seal() (the placeholder below), because only sealing knows it. Approval
comes later and lives in the audit log, so the card points there instead of claiming a decision it cannot know.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medtl.contracts.artifact import ArtifactMetadata

INTEGRITY_PLACEHOLDER = "<!-- medtl:integrity -->"
DEFAULT_LIMITATIONS = (
    "Validated only by patient-grouped cross-validation (and a locked test set when the evaluation report says "
    "so) on the data described above; performance on other scanners, sites or populations is unknown.",
    "Use only within the intended use stated above; inputs unlike the training data are flagged at scoring time, "
    "not corrected.",
    "Saliency maps, where shown, are illustrative and not validated.",
    "Not a medical device unless and until cleared as one; decisions stay with the clinician.",
)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _metrics_rows(metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[str]:
    """Accept {'auroc': 0.9, ...}, {'auroc': {'value':…, 'ci_low':…, 'ci_high':…}} or [{'name':…, 'value':…}, …]."""
    items: list[tuple[str, Any]]
    if isinstance(metrics, Mapping):
        items = list(metrics.items())
    else:
        items = [(str(entry.get("name")), entry) for entry in metrics]
    rows = ["| metric | value | 95% CI |", "|---|---|---|"]
    for name, value in items:
        if isinstance(value, Mapping):
            low, high = value.get("ci_low"), value.get("ci_high")
            ci = f"{_cell(low)} – {_cell(high)}" if low is not None and high is not None else ""
            rows.append(f"| {_cell(name)} | {_cell(value.get('value'))} | {ci} |")
        else:
            rows.append(f"| {_cell(name)} | {_cell(value)} | |")
    return rows


def render_model_card(
    metadata: ArtifactMetadata | Mapping[str, Any],
    *,
    metrics: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    fold_metrics: Sequence[Mapping[str, Any]] | None = None,
    data_summary: Mapping[str, Any] | None = None,
    limitations: Sequence[str] | None = None,
) -> str:
    meta = (
        metadata
        if isinstance(metadata, ArtifactMetadata)
        else ArtifactMetadata.model_validate(
            {k: v for k, v in metadata.items() if k not in ("contract", "contract_version")}
        )
    )
    prov, task, inp = meta.provenance, meta.task, meta.input
    lines = [
        f"# Model card: {meta.model_id} {meta.model_version}",
        "",
        "## Intended use",
        "",
        meta.intended_use,
        "",
        "## Task and output",
        "",
        f"- task: {task.kind}, classes {', '.join(task.classes)}"
        + (f" (positive class: {task.positive_class})" if task.positive_class else ""),
    ]
    lines += [f"- output `{key}`: {value}" for key, value in meta.output.items()]
    lines += [
        "",
        "## Input",
        "",
        f"- modalities: {', '.join(inp.modalities)}; {inp.image_kind}, {inp.channels} channel(s)",
        f"- spatial shape after preprocessing: {' × '.join(str(s) for s in inp.spatial_shape)}",
        f"- value range after preprocessing: {inp.value_range[0]:g} to {inp.value_range[1]:g}",
        f"- preprocessing spec sha256: `{meta.preprocessing_hash}` (preprocessing.json)",
        "",
        "## Data",
        "",
        f"- dataset manifest sha256: `{prov.manifest_hash}`",
        f"- dataset fingerprint sha256: `{prov.fingerprint_hash}`",
        f"- split sha256: `{prov.split_hash}` (splits.json)",
    ]
    lines += [f"- {_cell(key)}: {_cell(value)}" for key, value in (data_summary or {}).items()]
    lines += ["", "## Performance (out-of-fold, from training)", ""]
    if metrics:
        lines += _metrics_rows(metrics)
    else:
        lines.append("No pooled metrics were recorded; see the evaluation report.")
    if fold_metrics:
        lines += ["", "Per fold:", ""]
        for number, fold in enumerate(fold_metrics):
            lines.append(f"- fold {number}: " + ", ".join(f"{_cell(k)} {_cell(v)}" for k, v in fold.items()))
    pre = prov.pretrained
    lines += [
        "",
        "## Provenance",
        "",
        f"- code: {prov.code_version} (medtl {prov.medtl_version})",
        f"- python {prov.python}; " + ", ".join(f"{k} {v}" for k, v in prov.packages.items() if v != "not installed"),
        f"- environment lock sha256: `{prov.environment_sha256}` (environment.txt)"
        if prov.environment_sha256
        else "- environment lock: not recorded",
        f"- hardware: {prov.hardware.cpu} ({prov.hardware.cpu_count} cores)"
        + (
            f", GPU {prov.hardware.gpu}, CUDA {prov.hardware.cuda}, cuDNN {prov.hardware.cudnn}"
            if prov.hardware.gpu
            else ", no GPU"
        ),
        f"- pretrained weights: {pre.source} / {pre.name}"
        + (f", sha256 `{pre.sha256}`, license {pre.license}" if pre.sha256 else ""),
        f"- training config sha256: `{meta.config_hash}` (config.yaml)",
        f"- seed {prov.seed}" + (", " + ", ".join(f"{k} {v}" for k, v in prov.seeds.items()) if prov.seeds else ""),
        f"- trained {prov.started_at} → {prov.finished_at}"
        + (f", Prefect flow run {prov.flow_run_id}" if prov.flow_run_id else ""),
        "",
        "## Limitations",
        "",
    ]
    lines += [f"- {item}" for item in (limitations if limitations is not None else DEFAULT_LIMITATIONS)]
    lines += [
        "",
        "## Integrity and sign-off",
        "",
        INTEGRITY_PLACEHOLDER,
        "",
        "Approval or rejection by a clinician is recorded as a (signed) event in audit.jsonl after sealing; run "
        "`medtl verify` on this folder to see the current decision and to check every file against manifest.json.",
        "",
    ]
    return "\n".join(lines)


def integrity_text(*, signed: bool, fingerprint: str | None) -> str:
    if signed:
        return (
            f"Sealed and signed: manifest.json lists every file with its SHA-256 and signature.bin is an Ed25519 "
            f"signature over it by key {fingerprint}."
        )
    return (
        "**UNSIGNED ARTIFACT.** It was sealed without a signing key (explicitly allowed): manifest.json lists "
        "every file with its SHA-256, but nothing proves who built it. Do not use it for patient care."
    )
