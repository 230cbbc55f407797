"""build_model_card: the artifact (and, when given, its evaluation's metrics.json) as a ModelCard.

Why every number comes from metrics.json or the sealed artifact: the card is read by machines that compare models and
by governance boards that never open the report, so it must say exactly what the signed evaluation said, and nothing
the pipeline does not know (those fields stay null). Performance with intervals comes from the evaluation; without
one, only the training run's out-of-fold AUROC (no interval) is listed, and the card says so.
"""

from __future__ import annotations

from medtl.artifacts.card import DEFAULT_LIMITATIONS
from medtl.artifacts.contents import ArtifactContents
from medtl.cards.history import training_oof_auroc
from medtl.contracts.evaluation import Estimate, Evaluation, Metrics
from medtl.contracts.model_card import (
    AISystemFacts,
    BasicInfo,
    EvaluationSource,
    HistoryEntry,
    KeyMetrics,
    LearntFromSummary,
    Lineage,
    MetricResult,
    MetricSection,
    ModelCard,
    ModelSummary,
    PretrainedLineage,
    ReleaseInfo,
    Replacement,
    TrustIngredients,
    UsesAndDirections,
    Warnings,
)
from medtl.errors import ConfigError

TEST_TYPES = {
    "test": "locked test set, scored once with the threshold frozen on cross-validation",
    "oof": "patient-grouped cross-validation (out-of-fold predictions)",
}
SCORING = (
    "Score scans with `medtl score ARTIFACT SRC... --out DIR`: it verifies the artifact's hashes and signature, runs "
    "the artifact's own preprocessing, flags inputs unlike the training data and writes one row per scan with the "
    "probability and the decision at the approved threshold (provisional until a clinician approves)."
)
MAINTENANCE = (
    "Every scoring run is recorded in the artifact's audit log, and inputs unlike the training data (modality, "
    "spacing, intensity, features) are flagged per scan; `medtl monitor` compares each night's inputs and outputs "
    "with the training reference and the trailing nights. A retrained model is a new artifact, put into service "
    "only after its own evaluation, a paired non-inferiority comparison with the model in service on the same "
    "locked test patients, and a reviewer-signed promotion in the site's service registry."
)
TRANSPARENCY = (
    "An evaluation report (report.html / report.pdf) for the reviewing clinician, mapped to the CLAIM 2024 and "
    "TRIPOD+AI checklists; an append-only, hash-chained audit log of every evaluation, approval and scoring run."
)


def _results(estimates: list[Estimate], evaluated_on: str, prefix: str = "") -> list[MetricResult]:
    return [
        MetricResult(
            label=f"{prefix}{e.name}",
            evaluated_on=evaluated_on,
            value=e.value,
            ci_low=e.ci_low,
            ci_high=e.ci_high,
            ci_method=e.ci_method,
            n=e.n,
        )
        for e in estimates
    ]


def _usefulness(metrics: Metrics | None, contents: ArtifactContents) -> MetricSection:
    if metrics is None:
        auc = training_oof_auroc(contents)
        return MetricSection(
            metric_goal="Discrimination of the task's classes.",
            results=[MetricResult(label="auroc", evaluated_on="training", value=auc)],
            interpretation="Pooled out-of-fold AUROC recorded by the training run, without an interval; run "
            "`medtl evaluate` for intervals, the operating point and a locked test set.",
            test_type=TEST_TYPES["oof"],
            testing_data_description=_cohort_text(contents),
            validation_process_and_justification="Not yet evaluated by `medtl evaluate`.",
        )
    results = []
    for ev in metrics.evaluations:
        results += _results(ev.estimates, ev.evaluated_on)
        for ep in ev.endpoints:
            results += _results(ep.estimates, ev.evaluated_on, prefix=f"{ep.display}: ")
    head = _headline(metrics)
    return MetricSection(
        metric_goal="Discrimination (AUROC, AUPRC) and, at the operating point chosen on cross-validation, "
        "sensitivity, specificity, PPV and NPV.",
        results=results,
        interpretation=f"Headline source: {TEST_TYPES[head.evaluated_on]}; {head.n_patients} patients, "
        f"{head.n_scans} scans. 95% intervals as stated per result.",
        test_type="; ".join(TEST_TYPES[ev.evaluated_on] for ev in metrics.evaluations),
        testing_data_description=_cohort_text(contents, head),
        validation_process_and_justification="Patients are split by patient (no patient on both sides of a fold); "
        "the operating point rule is declared before evaluation and frozen before any test set is read.",
    )


def _fairness(metrics: Metrics | None) -> MetricSection:
    results = []
    for ev in metrics.evaluations if metrics else []:
        groups = list(ev.subgroups) + [s for ep in ev.endpoints for s in ep.subgroups]
        for group in groups:
            small = " (small cell)" if group.small_cell else ""
            results += _results(group.estimates, ev.evaluated_on, prefix=f"{group.attribute}={group.value}{small}: ")
    return MetricSection(
        metric_goal="Differences in performance between the patient and acquisition groups the data records "
        "(site, manufacturer, sex, age band, modality, where present).",
        results=results,
        interpretation="Small cells have too few patients or events for a stable estimate and are marked."
        if results
        else "No subgroup attribute was recorded in the data: performance across patient groups is unknown.",
        test_type="subgroups of the evaluations above",
        testing_data_description="the same patients as the performance results",
        validation_process_and_justification="Patient-bootstrap intervals per subgroup.",
    )


def _safety(metrics: Metrics | None) -> MetricSection:
    results = []
    for ev in metrics.evaluations if metrics else []:
        if ev.calibration is not None:
            cal = ev.calibration
            for name in ("brier", "ece", "intercept", "slope"):
                results.append(
                    MetricResult(label=f"calibration {name}", evaluated_on=ev.evaluated_on, value=getattr(cal, name))
                )
        for curve in ev.decision_curves:
            if curve.operating_net_benefit is not None:
                results.append(
                    MetricResult(
                        label=f"net benefit at the operating point, {curve.display}",
                        evaluated_on=ev.evaluated_on,
                        value=curve.operating_net_benefit,
                        n=curve.n,
                    )
                )
    if metrics is not None and metrics.seed_spread is not None:
        for s in metrics.seed_spread.summary:
            results.append(
                MetricResult(
                    label=f"{s.name} SD over {s.n_runs} training seeds",
                    evaluated_on="oof",
                    value=s.sd,
                    ci_low=s.minimum,
                    ci_high=s.maximum,
                    ci_method="range over seeds",
                    n=s.n_runs,
                )
            )
    return MetricSection(
        metric_goal="Calibration of the probabilities, net benefit of acting on the model, and stability over "
        "training seeds.",
        results=results,
        interpretation="Calibration slope 1 and intercept 0 are ideal; net benefit above 0 and above treating all "
        "means acting on the model helps at that threshold (see the report's decision curves)."
        if results
        else "Not assessed: no evaluation was given.",
        test_type="the evaluations above",
        testing_data_description="the same patients as the performance results",
        validation_process_and_justification="Logistic recalibration for slope and intercept; decision-curve "
        "analysis (Vickers & Elkin 2006).",
    )


def _headline(metrics: Metrics) -> Evaluation:
    return next((e for e in metrics.evaluations if e.evaluated_on == "test"), metrics.evaluations[0])


def _cohort_text(contents: ArtifactContents, head: Evaluation | None = None) -> str:
    oof = contents.oof
    main = oof[oof["arm"] == "main"]
    text = (
        f"Development data: {main['patient_id'].nunique()} patients, {len(main)} scans, "
        f"{contents.splits.n_folds}-fold patient-grouped cross-validation; data manifest sha256 "
        f"{contents.metadata.provenance.manifest_hash}."
    )
    if head is not None and head.evaluated_on == "test":
        text += f" Locked test set: {head.n_patients} patients, {head.n_scans} scans."
    return text


def _release(contents: ArtifactContents) -> ReleaseInfo:
    status = contents.verified.status
    stage = {
        "approved": "approved for use by a signed clinical review (audit log)",
        "rejected": "rejected by clinical review (audit log); not for use",
        "undecided": "research: not approved for clinical use",
    }[status.state]
    decided = status.statement.decided_at if status.approved and status.statement is not None else None
    return ReleaseInfo(release_stage=stage, release_date=decided, release_version=contents.metadata.model_version)


def _lineage(
    contents: ArtifactContents,
    evaluation: EvaluationSource | None,
    replaced: Replacement | None,
    history: list[HistoryEntry],
) -> Lineage:
    verified, meta = contents.verified, contents.metadata
    prov = meta.provenance
    weights = prov.pretrained
    return Lineage(
        artifact_manifest_hash=verified.manifest_hash,
        signed_by=verified.manifest.key_fingerprint if verified.is_signed else None,
        signer_trusted=verified.trusted,
        data_manifest_hash=prov.manifest_hash,
        split_hash=prov.split_hash,
        config_hash=meta.config_hash,
        preprocessing_hash=meta.preprocessing_hash,
        code_version=prov.code_version,
        seed=prov.seed,
        trained_at=prov.finished_at,
        pretrained=PretrainedLineage(
            source=weights.source,
            name=weights.name,
            sha256=weights.sha256,
            license=weights.license,
            medtl_artifact=weights.source == "artifact",
        ),
        learnt_from=[
            LearntFromSummary(
                kind=source.kind,
                artifact_name=source.artifact_name,
                artifact_manifest_hash=source.artifact_manifest_hash,
                patients=len(source.patients),
            )
            for source in contents.lineage.sources
        ],
        evaluation=evaluation,
        replaced=replaced,
        history=history,
    )


def _limitations(contents: ArtifactContents, metrics: Metrics | None) -> list[str]:
    items = list(DEFAULT_LIMITATIONS)
    if not contents.verified.trusted:
        items.insert(0, "UNTRUSTED: the card was made without a trust anchor; nothing shows who built the model.")
    if metrics is None:
        items.append("No evaluation was given: performance is the training run's out-of-fold AUROC only.")
    elif not any(e.evaluated_on == "test" for e in metrics.evaluations):
        items.append("No locked test set was evaluated: every number is from cross-validation.")
    return items


def build_model_card(
    contents: ArtifactContents,
    *,
    metrics: Metrics | None = None,
    evaluation: EvaluationSource | None = None,
    replaced: Replacement | None = None,
    history: list[HistoryEntry] | None = None,
    developer: str | None = None,
) -> ModelCard:
    """`metrics` must be this artifact's (refused otherwise); `evaluation` says which file it came from."""
    verified, meta, task = contents.verified, contents.metadata, contents.task
    if metrics is not None and metrics.artifact_manifest_hash != verified.manifest_hash:
        raise ConfigError(
            "the metrics.json belongs to another artifact",
            where=verified.folder.name,
            fix="pass the metrics.json that `medtl evaluate` wrote for this artifact",
        )
    inp, model = meta.input, meta.model
    modalities = ", ".join(inp.modalities) or "not recorded"
    decision = f"positive class {task.positive_class}" if task.positive_class else f"classes {', '.join(task.classes)}"
    weights = meta.provenance.pretrained
    subgroups = [
        f"{s.attribute}={s.value}"
        for ev in (metrics.evaluations if metrics else [])
        for s in ev.subgroups
        if s.small_cell
    ]
    return ModelCard(
        model_id=meta.model_id,
        basic_info=BasicInfo(model_name=meta.model_id, model_developer=developer),
        release_info=_release(contents),
        model_summary=ModelSummary(
            summary=f"{task.kind} classification ({decision}) of {modalities} {inp.image_kind} images. "
            f"{meta.intended_use}",
            keywords=[task.kind, *inp.modalities, inp.image_kind, str(model.get("backbone", "network"))],
        ),
        uses_and_directions=UsesAndDirections(
            intended_use_and_workflow=meta.intended_use,
            how_to_use=SCORING,
            targeted_patient_population="Patients like those of the development data (see "
            "trust_ingredients.ai_system_facts.development_data_characterization); no other population was evaluated.",
            cautioned_out_of_scope_settings=f"Images other than {modalities} {inp.image_kind}s; other sites, scanners "
            "or populations without local validation; any use before a clinician's approval is recorded; use as the "
            "sole basis of a clinical decision.",
        ),
        warnings=Warnings(
            known_risks_and_limitations=_limitations(contents, metrics),
            known_biases_or_ethical_considerations=[f"too few patients or events to judge: {', '.join(subgroups)}"]
            if subgroups
            else [],
        ),
        trust_ingredients=TrustIngredients(
            ai_system_facts=AISystemFacts(
                outcomes_and_outputs="; ".join(f"{k}: {v}" for k, v in meta.output.items()),
                model_type=f"{model.get('backbone', 'network')} ({model.get('spatial_dims', '?')}D convolutional "
                "network), "
                + (
                    "trained from random initialisation"
                    if weights.source == "none"
                    else f"transferred from {weights.source}:{weights.name}"
                ),
                input_data_source=f"{modalities} scans (DICOM or NIfTI) ingested by medtl; pseudonymous identifiers "
                "only.",
                output_and_input_data_types=f"input: {inp.channels} channel(s), shape "
                f"{'x'.join(str(s) for s in inp.spatial_shape)}, values {inp.value_range[0]:g} to "
                f"{inp.value_range[1]:g} after the artifact's preprocessing (preprocessing.json); output: one "
                f"probability per {'finding' if task.kind == 'multilabel' else 'class'} ({', '.join(task.classes)})",
                development_data_characterization=_cohort_text(contents),
                ongoing_maintenance=MAINTENANCE,
                security="Sealed artifact: every file's SHA-256 in manifest.json, "
                + (f"signed (Ed25519) by key {verified.manifest.key_fingerprint}" if verified.is_signed else "UNSIGNED")
                + "; `medtl verify` checks it. No patient identifiers, names, dates or paths are stored.",
                transparency=TRANSPARENCY,
            )
        ),
        key_metrics=KeyMetrics(
            usefulness_usability_efficacy=_usefulness(metrics, contents),
            fairness_equity=_fairness(metrics),
            safety_reliability=_safety(metrics),
        ),
        lineage=_lineage(contents, evaluation, replaced, history or []),
    )
