"""The `medtl` command: one sub-command per pipeline stage (see README, "Commands").

Heavy libraries (torch, MONAI) are imported inside the commands, so `medtl --help` stays fast. Every medtl error is
printed as a short message with what to do, and mapped to a stable exit code.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from medtl import __version__
from medtl.artifacts import cli as trust_cli
from medtl.errors import ConfigError, MedTLError
from medtl.sources import cli as pacs

app = typer.Typer(
    name="medtl",
    help="Transfer learning for medical images: ingest DICOM/NIfTI, fine-tune pretrained networks with "
    "patient-grouped cross-validation, and produce audited artifacts, clinician reports and batch scores.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
datasets_app = typer.Typer(help="Bring public datasets into medtl's input format.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")

err_console = Console(stderr=True)
console = Console()

DevKeyOption = Annotated[
    bool,
    typer.Option(
        "--dev-pseudonym-key",
        help="Use the public development pseudonym key instead of MEDTL_PSEUDONYM_KEY. "
        "Only for synthetic or public data: it is recorded in every output.",
    ),
]


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug logging.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s%(run)s: %(message)s")
    logging.captureWarnings(True)  # Python warnings become log records: one policy for both, below
    for handler in logging.getLogger().handlers:
        handler.addFilter(_name_the_run)
        if not verbose:
            handler.addFilter(_without_dicom_values)
    for chatty in ("httpx", "weasyprint", "fontTools", "dicomweb_client"):  # one line per request or step
        logging.getLogger(chatty).setLevel(logging.DEBUG if verbose else logging.WARNING)
    # pynetdicom logs each association, and its errors repeat what medtl's error then says with a fix
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    # highdicom logs the SOP Instance UID of every file it copies from (INFO) and warns with the patient's name
    logging.getLogger("highdicom").setLevel(logging.DEBUG if verbose else logging.ERROR)


_DICOM_LIBRARIES = re.compile(r"[/\\](pydicom|highdicom)[/\\]")


def _without_dicom_values(record: logging.LogRecord) -> bool:
    """pydicom's and highdicom's warnings quote the offending value ("Invalid value for VR DA: '19460204'"), and a
    header value may be a birth date or a name: at the default level they are not shown (medtl's own reports say
    what was wrong, by keyword). `--verbose` shows them, for a developer's machine."""
    if record.levelno >= logging.ERROR:
        return True
    if record.name.split(".")[0] in ("pydicom", "highdicom"):
        return False
    return not (record.name == "py.warnings" and _DICOM_LIBRARIES.search(record.getMessage()))


def _name_the_run(record: logging.LogRecord) -> bool:
    """Prefect's records carry the flow or task run they come from; show it, so that fold 2's log reads as such."""
    run = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
    record.run = f" [{run}]" if run else ""
    return True


@app.command()
def version() -> None:
    """Print the medtl version."""
    console.print(__version__)


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the cohort into (created).")],
    patients: Annotated[int, typer.Option("--patients", "-n", min=2, help="Number of patients.")] = 24,
    seed: Annotated[int, typer.Option(help="Seed: the same seed writes byte-identical files.")] = 0,
    prevalence: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of patients with the finding.")] = 0.5,
    difficulty: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="0 = obvious finding, 1 = subtle (smaller, fainter).")
    ] = 0.3,
    with_problems: Annotated[
        bool, typer.Option("--with-problems", help="Mix in broken and unusual files that ingest must handle.")
    ] = False,
    task: Annotated[
        str,
        typer.Option(
            help="binary (a lesion or not), ordinal (graded lesion, see --grades) or multilabel (several finding "
            "kinds, see --findings). --prevalence: the share with a lesion, or the first finding's share."
        ),
    ] = "binary",
    grades: Annotated[int, typer.Option(help="ordinal: number of grades, 0 = no lesion (3 to 8).")] = 5,
    findings: Annotated[int, typer.Option(help="multilabel: number of finding kinds (2 to 4).")] = 3,
) -> None:
    """Write a synthetic cohort: real DICOM series (+ NIfTI copies) and labels.csv, with a learnable finding.

    Graded (--task ordinal) and multi-finding (--task multilabel) cohorts print the `medtl ingest` command with the
    task declaration they need."""
    from medtl.datasets.synth import make_cohort

    summary = make_cohort(
        out, patients=patients, seed=seed, prevalence=prevalence, difficulty=difficulty, with_problems=with_problems,
        task=task, grades=grades, findings=findings,  # type: ignore[arg-type]  (checked by make_cohort)
    )  # fmt: skip
    console.print(summary.describe())


@datasets_app.command("import-medmnist")
def import_medmnist(
    name: Annotated[str, typer.Argument(help="MedMNIST set, e.g. breastmnist, pneumoniamnist, adrenalmnist3d.")],
    source: Annotated[str, typer.Option(help="Local .npz file, or an https URL to download when online.")],
    out: Annotated[Path, typer.Option(help="Folder for the DICOM/NIfTI files and labels.csv.")],
    limit: Annotated[
        int | None, typer.Option(min=1, help="Convert only the first N images of each split (quick trials).")
    ] = None,
    modality: Annotated[
        str | None, typer.Option(help="2D sets: write this DICOM Modality (US, DX, OT) instead of the set's own.")
    ] = None,
) -> None:
    """Convert a MedMNIST .npz into DICOM (2D) or NIfTI (3D) files and labels.csv with the official split."""
    from medtl.datasets.medmnist import import_medmnist as run_import

    summary = run_import(name, source=source, out=out, limit=limit, modality=modality)
    console.print(summary.describe())


@app.command()
def ingest(
    sources: Annotated[
        list[str], typer.Argument(help="Folders or files with DICOM / NIfTI scans, or one PACS URI (see README).")
    ],
    out: Annotated[Path, typer.Option(help="Dataset folder to write (manifest, reports, cache).")],
    labels: Annotated[Path | None, typer.Option(help="labels.csv (see data_contracts/labels.v1.schema.json).")] = None,
    spec: Annotated[
        Path | None, typer.Option(help="Preprocessing spec YAML/JSON; default: derived from the data.")
    ] = None,
    workers: Annotated[int, typer.Option(min=0, help="Parallel worker processes; 0 = one per CPU core.")] = 0,
    dev_pseudonym_key: DevKeyOption = False,
    study_date_from: pacs.DateFrom = None,
    study_date_to: pacs.DateTo = None,
    modality: pacs.Modality = None,
    body_part: pacs.BodyPart = None,
    series_description: pacs.Description = None,
    id_list: pacs.IdList = None,
    max_staging_gb: pacs.StagingGb = 20.0,
    max_file_gb: Annotated[
        float | None, typer.Option(min=0.001, help="Largest input file read at all, GiB (default 3).")
    ] = None,
    max_image_gb: Annotated[
        float | None,
        typer.Option(min=0.001, help="Pixel data one DICOM object or NIfTI file may declare, GiB (default 2)."),
    ] = None,
    max_series_gb: Annotated[
        float | None, typer.Option(min=0.001, help="Pixel data of all slices of one scan, GiB (default 4).")
    ] = None,
    max_frame_megapixels: Annotated[
        float | None, typer.Option(min=0.001, help="Pixels of one 2D frame, millions (default 268, 16384^2).")
    ] = None,
    task_kind: Annotated[
        str | None,
        typer.Option(
            help="Declare the task: binary, multiclass, ordinal (grades: always declared) or multilabel; written to "
            "DATASET/task.json after a check against the labels. Default: inferred at training where unambiguous."
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            help="With --task-kind: the class (or finding) names, comma-separated, in order (lowest grade "
            "first); default: the labels found, numbers in numeric order."
        ),
    ] = None,
    positive_class: Annotated[str | None, typer.Option(help="With --task-kind binary: the class of interest.")] = None,
    decision_cut: Annotated[
        str | None,
        typer.Option(help="With --task-kind ordinal: the decision is 'grade >= this grade' (default: middle grade)."),
    ] = None,
    task_json: Annotated[
        Path | None, typer.Option(help="A task.json to use as the declaration (e.g. one import-medmnist wrote).")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Read every file again, not only new and changed ones.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Also hash every file whose size and time are unchanged.")
    ] = False,
) -> None:
    """Discover, check, decode, preprocess and cache scans; every input file ends ingested, skipped or quarantined.

    A re-run into the same DATASET reads only new and changed files (ingest_state.json records what was read)."""
    from medtl.identity import pseudonymizer_from_env
    from medtl.ingest.declaration import check_with_labels_file, declare_task
    from medtl.ingest.preprocess import load_spec
    from medtl.io.limits import limits_from_options

    declared = declare_task(task_kind, classes, positive_class, decision_cut, file=task_json)
    if declared is not None:
        declared = check_with_labels_file(declared, labels)  # before any scan is read: a typo costs nothing
    pseudonymizer = pseudonymizer_from_env(allow_development_key=dev_pseudonym_key)
    limits = limits_from_options(file_gb=max_file_gb, image_gb=max_image_gb, series_gb=max_series_gb,
                                 frame_megapixels=max_frame_megapixels)  # fmt: skip
    options = dict(out=out, labels=labels, spec=load_spec(spec) if spec else None, workers=workers,
                   pseudonymizer=pseudonymizer, progress=True, limits=limits)  # fmt: skip
    if any(pacs.is_remote(source) for source in sources):
        from medtl.ingest.from_pacs import ingest_from_pacs
        from medtl.sources.pull import GIB

        query = pacs.build_query(study_date_from, study_date_to, None, modality, body_part, series_description,
                                 id_list)  # fmt: skip
        result = ingest_from_pacs(_one_source(sources), query, max_staging_bytes=int(max_staging_gb * GIB), **options)
        if declared is not None:  # the PACS batches are ingested one by one; the declaration is the dataset's
            from medtl.contracts import write_json
            from medtl.ingest.pipeline import TASK_DECLARATION

            write_json(declared, out / TASK_DECLARATION)
    else:
        from medtl.ingest.pipeline import ingest_sources

        result = ingest_sources(
            [Path(source) for source in sources], task=declared, incremental=not full, verify=verify, **options
        )
    console.print(result.describe())


def _one_source(sources: list[str]) -> str:
    if len(sources) != 1:
        raise ConfigError("a PACS source is given alone", fix="run one command per PACS; folders go in another run")
    return sources[0]


Budget = Annotated[
    float | None,
    typer.Option(help="Minutes for planning and training on this machine; the plan fits its recipe into them."),
]


def _plan_options(
    budget: float | None,
    device: str = "auto",
    search: bool | None = None,
    seed: int = 0,
    weights_artifact: Path | None = None,
    max_steps: int | None = None,
):
    from medtl.planning import PlanOptions

    if budget is not None and not budget > 0:  # checked before any probe runs; NaN is not a budget either
        raise ConfigError(f"--budget {budget:g}: a time budget is a number of minutes above 0", where="--budget",
                          fix="give the minutes the run may take, e.g. --budget 30, or leave --budget out")  # fmt: skip
    return PlanOptions(
        budget_minutes=budget, device=device, search=search, seed=seed, weights_artifact=weights_artifact,
        max_steps=max_steps,
    )  # fmt: skip


@app.command()
def plan(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder written by `medtl ingest`.")],
    out: Annotated[Path, typer.Option(help="plan.yaml to write: a complete train config with a reason per choice.")],
    budget: Budget = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda: where the cost probe runs.")] = "auto",
    search: Annotated[
        bool | None,
        typer.Option("--search/--no-search", help="Compare candidate recipes by inner CV (default: with --budget)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="The run's one seed.")] = 0,
    weights_artifact: Annotated[
        Path | None, typer.Option(help="An earlier medtl artifact to transfer from (verified now).")
    ] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Cap the schedule (a quick look, not a result).")] = None,
) -> None:
    """Choose the training recipe from the data, the labels, the pretrained weights present, the hardware and a
    time budget; every choice is written with its reason. `medtl train --config plan.yaml` runs it."""
    from medtl.planning import make_plan, write_plan
    from medtl.planning.plan import summary

    config = make_plan(dataset, _plan_options(budget, device, search, seed, weights_artifact, max_steps))
    write_plan(config, out)
    console.print(escape(summary(config)))
    console.print(f"plan written to {escape(str(out))}")


@app.command()
def train(
    dataset: Annotated[Path, typer.Argument(help="Dataset folder written by `medtl ingest`.")],
    out: Annotated[Path, typer.Option(help="Artifact folder to write (must not exist or be empty).")],
    config: Annotated[
        Path | None,
        typer.Option(help="Training config YAML or a plan.yaml (see README, 'Training'); default: plan one now."),
    ] = None,
    budget: Budget = None,
) -> None:
    """Split by patient, adapt a pretrained backbone and fine-tune it over K folds; write the artifact.

    Without --config the recipe is planned first (as `medtl plan` does) and kept, with its reasons, in the artifact."""
    from medtl.training.config import TrainConfig, load_config
    from medtl.training.train import check_preconditions
    from medtl.training.train import train as run_training

    if config is not None and budget is not None:
        raise ConfigError("--budget plans a recipe, --config gives one: use one of them", fix="drop one option")
    if config is None:
        from medtl.planning.plan import plan_for_run, saved_plan_path, summary

        check_preconditions(TrainConfig(), out)  # a taken --out or a missing key must not wait for the plan
        console.print("no --config: planning the recipe for this dataset and machine (see `medtl plan`)")
        chosen = plan_for_run(dataset, out, _plan_options(budget))
        console.print(escape(summary(chosen)))
    else:
        chosen = load_config(config)
    result = run_training(dataset, chosen, out, progress=True)
    if config is None:
        saved_plan_path(out).unlink(missing_ok=True)  # sealed: the artifact's config.yaml holds the plan
    console.print(result.describe())


@app.command()
def pretrain(
    datasets: Annotated[list[Path], typer.Argument(help="Dataset folders written by `medtl ingest`; labels ignored.")],
    out: Annotated[Path, typer.Option(help="Pretrained artifact folder to write (must not exist or be empty).")],
    config: Annotated[Path | None, typer.Option(help="Pretraining config YAML (README, 'Pretraining').")] = None,
    method: Annotated[str | None, typer.Option(help="simclr (contrastive) or masked (masked image modelling).")] = None,
    backbone: Annotated[
        str | None, typer.Option(help="Registry backbone (`medtl weights list`); default resnet18.")
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs over the pool (a time budget may shorten them).")] = None,
    budget: Annotated[float | None, typer.Option(help="Time budget in minutes; the schedule is fitted to it.")] = None,
    exclude_patients_of: Annotated[
        list[Path] | None,
        typer.Option(
            "--exclude-patients-of", help="A dataset (e.g. an external test set) whose patients are left out."
        ),
    ] = None,
) -> None:
    """Self-supervised pretraining of a backbone on unlabelled scans; writes a signed `pretrained` artifact.

    Every locked-test patient of the datasets is left out (recorded in the artifact). Train from the result with
    `model: {weights: {source: artifact, path: OUT}}` or `medtl plan --weights-artifact OUT`."""
    from medtl.pretraining.config import load_pretrain_config
    from medtl.pretraining.pretrain import pretrain as run_pretraining

    overrides = {"method": method, "epochs": epochs, "time_budget_minutes": budget,
                 "exclude_patients_of": exclude_patients_of or None}  # fmt: skip
    if backbone is not None:
        overrides["model"] = {"backbone": backbone, "weights": "none"}
    chosen = load_pretrain_config(config, overrides)
    result = run_pretraining(datasets, chosen, out, progress=True)
    console.print(escape(result.describe()))


@app.command()
def evaluate(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `medtl train`.")],
    out: Annotated[Path, typer.Option(help="Report folder: report.html, report.pdf, metrics.json.")],
    test: Annotated[
        Path | None, typer.Option(help="Locked test dataset (ingested); its 'test' split, or all of it, scored once.")
    ] = None,
    dataset: Annotated[
        Path | None, typer.Option(help="The training dataset, to show out-of-fold failure cases without a test set.")
    ] = None,
    rule: Annotated[str, typer.Option(help="Operating-point rule: youden, sensitivity>=X, specificity>=X.")] = "youden",
    temperature_scaling: Annotated[
        bool, typer.Option(help="Fit a temperature on the out-of-fold predictions; report calibration before/after.")
    ] = False,
    pdf: Annotated[bool, typer.Option(help="Also write report.pdf (needs WeasyPrint).")] = True,
    allow_untrusted: trust_cli.AllowUntrusted = False,
    replicate: Annotated[
        list[Path] | None,
        typer.Option(help="An artifact of the same recipe trained with another seed (repeatable): the seed spread."),
    ] = None,
) -> None:
    """Metrics with confidence intervals, calibration, operating point, subgroups, transfer; report.html/pdf.

    The `evaluated` event is signed with the pipeline key (MEDTL_SIGNING_KEY), which must be a trusted key."""
    from medtl.artifacts import resolve_trust
    from medtl.evaluation.evaluate import evaluate as run_evaluation

    result = run_evaluation(
        artifact, out=out, test=test, dataset=dataset, rule=rule, temperature_scaling=temperature_scaling, pdf=pdf,
        trust=resolve_trust(allow_untrusted=allow_untrusted), replicates=replicate or [],
    )  # fmt: skip
    console.print(result.describe())


@app.command()
def approve(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder.")],
    reviewer: Annotated[str, typer.Option(help="Reviewer's name (a clinician, not a patient).")],
    role: Annotated[str, typer.Option(help="Reviewer's role, e.g. consultant radiologist.")],
    decision: Annotated[str, typer.Option(help="approve or reject.")],
    report: Annotated[Path, typer.Option(help="The report folder (or report.html) the decision is about.")],
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Decision threshold; default: the report's operating point. Binary: the positive class's; ordinal: "
            "the decision cut's (the other cuts keep the report's). Refused for multiclass (the most probable class "
            "decides) and multilabel (each finding keeps the report's operating point)."
        ),
    ] = None,
    comment: Annotated[str | None, typer.Option(help="Free-text comment for the record.")] = None,
    key: Annotated[
        Path | None, typer.Option(help="The reviewer's own Ed25519 private key (PEM); default: $MEDTL_REVIEWER_KEY.")
    ] = None,
    sign_only: Annotated[
        bool,
        typer.Option(
            "--sign-only",
            help="Print the signed decision (one line) instead of recording it, for a paused flow's review form.",
        ),
    ] = False,
    allow_untrusted: trust_cli.AllowUntrusted = False,
) -> None:
    """Sign a clinician's decision with the reviewer's own key, bound to the report's hash, and record it.

    It counts only when the key is listed in MEDTL_APPROVER_KEYS where the artifact is read (never the pipeline key)."""
    from medtl.artifacts import open_verified, resolve_trust
    from medtl.artifacts.decisions import encode_decision
    from medtl.evaluation.approve import record_review, sign_review

    verified = open_verified(artifact, trust=resolve_trust(allow_untrusted=allow_untrusted))  # hashed once, not twice
    signed = sign_review(
        verified, reviewer=reviewer, role=role, decision=decision, report=report, threshold=threshold,  # type: ignore[arg-type]
        comment=comment, key=key,
    )  # fmt: skip
    if sign_only:
        console.print(encode_decision(signed), markup=False, highlight=False, soft_wrap=True)
        return
    event = record_review(verified, signed)
    threshold_text = "none" if signed.statement.threshold is None else f"{signed.statement.threshold:g}"
    console.print(
        f"recorded: {event.kind} by {event.actor} (event {event.index}, threshold {threshold_text})", markup=False
    )


@app.command()
def score(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder (verified, and approved unless allowed).")],
    sources: Annotated[list[str], typer.Argument(help="Folders or files with new scans, or one PACS URI.")],
    out: Annotated[Path, typer.Option(help="Output folder: scores.parquet, ingest/, sr/ (and pull-state/).")],
    allow_unapproved: Annotated[
        bool, typer.Option("--allow-unapproved", help="Score with an unapproved artifact; outputs are marked.")
    ] = False,
    policy: Annotated[
        str, typer.Option(help="flag: score out-of-distribution scans and mark them; abstain: withhold decisions.")
    ] = "flag",
    tta: Annotated[
        bool,
        typer.Option(
            help="Average with a left-right flipped copy (test-time augmentation); a model trained with "
            "test_time_flips already does, calibrated on it."
        ),
    ] = False,
    sr: Annotated[bool, typer.Option("--sr", help="Also write a DICOM SR per scored DICOM series (for PACS).")] = False,
    workers: Annotated[int, typer.Option(min=0, help="Ingest worker processes; 0 = one per CPU core.")] = 0,
    dev_pseudonym_key: DevKeyOption = False,
    study_date_from: pacs.DateFrom = None,
    study_date_to: pacs.DateTo = None,
    lookback_days: pacs.Lookback = None,
    modality: pacs.Modality = None,
    body_part: pacs.BodyPart = None,
    series_description: pacs.Description = None,
    id_list: pacs.IdList = None,
    send_back: Annotated[
        bool, typer.Option(help="PACS: store each series' SR into its study (STOW-RS / C-STORE).")
    ] = True,
    max_staging_gb: pacs.StagingGb = 2.0,
    allow_untrusted: trust_cli.AllowUntrusted = False,
    registry: Annotated[
        Path | None, typer.Option(help="Service registry: refuse unless ARTIFACT is the one in service now.")
    ] = None,
) -> None:
    """Batch-score new scans with the artifact's own preprocessing, with QC and out-of-distribution flags.

    With a PACS URI: only series not yet scored by this artifact are pulled (the watermark is in OUT/pull-state),
    in batches of at most --max-staging-gb, and each series' SR is sent back to its study."""
    from medtl.artifacts import resolve_trust
    from medtl.identity import pseudonymizer_from_env

    pseudonymizer = pseudonymizer_from_env(allow_development_key=dev_pseudonym_key)
    options = dict(out=out, pseudonymizer=pseudonymizer, allow_unapproved=allow_unapproved, policy=policy, tta=tta,
                   progress=True, trust=resolve_trust(allow_untrusted=allow_untrusted), registry=registry)  # fmt: skip
    if any(pacs.is_remote(source) for source in sources):
        from medtl.scoring.from_pacs import score_from_pacs
        from medtl.sources.pull import GIB

        query = pacs.build_query(study_date_from, study_date_to, lookback_days, modality, body_part,
                                 series_description, id_list)  # fmt: skip
        result = score_from_pacs(artifact, _one_source(sources), query, send_back=send_back,
                                 max_staging_bytes=int(max_staging_gb * GIB), **options)  # fmt: skip
    else:
        from medtl.scoring.score import score as run_scoring

        result = run_scoring(artifact, [Path(s) for s in sources], sr=sr, workers=workers, **options)
    console.print(result.describe())


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = Path("demo-output"),
    patients: Annotated[
        int, typer.Option(min=12, help="Patients in the target cohort (the source cohort has twice as many).")
    ] = 40,
    seed: Annotated[int, typer.Option(help="Seed for the cohorts and every later stage.")] = 0,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs per fold (fewer for a quick look).")] = 18,
) -> None:
    """Run the whole pipeline as Prefect flows on synthetic cohorts, offline, and print where the outputs are."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # the demo runs offline
    from pipelines.demo import DemoParameters, demo_flow  # the flows live outside the Prefect-free library

    result = demo_flow(DemoParameters(out=out, patients=patients, seed=seed, epochs=epochs))
    verified = result["verified"]
    console.rule("done")
    console.print(f"sign-off:        {result['sign_off']} (demo reviewer: synthetic data only)")
    scored = {k: v for k, v in result["scored"].items() if k != "monitoring"}
    console.print(f"in service:      {result['promotion']} (registry {result['registry']}; signed by the reviewer)")
    console.print("scored:          " + ", ".join(f"{k} {v}" for k, v in scored.items()))
    watched = result["scored"].get("monitoring", {})
    console.print(f"monitoring:      {watched.get('status')} ({result['monitoring'] / 'monitor.html'})")
    console.print(f"report:          {result['report'] / 'report.html'}")
    console.print(f"target artifact: {result['target']} (verified: {len(verified.checks)} checks passed; "
                  f"{len(verified.events)} audit events)")  # fmt: skip
    console.print(f"pretrained:      {result['transfer']}")
    console.print(f"scores:          {result['scores'] / 'scores.parquet'} (DICOM SR in {result['scores'] / 'sr'})")
    console.print(f"dataset:         {result['dataset']} (read qc_summary.md)")


def _exit_with_code(command: Callable[..., int]) -> Callable[..., None]:
    """Mount a command function that returns its exit code (so it can be called from Python and tests)."""

    @functools.wraps(command)
    def run(*args: object, **kwargs: object) -> None:
        raise typer.Exit(command(*args, **kwargs))

    return run


def _mount_lazy_commands() -> None:
    """Commands whose modules keep heavy imports (torch) inside their functions, so `--help` stays fast."""
    from medtl.artifacts.cli import verify_command
    from medtl.cards.cli import card_command
    from medtl.datasets.synth.cli import synth_archive_command
    from medtl.evaluation.compare_cli import compare_command
    from medtl.models.cli import weights_app
    from medtl.monitoring.cli import monitor_command
    from medtl.scoring.service_cli import service_app

    app.command("verify")(_exit_with_code(verify_command))
    app.command("monitor")(monitor_command)
    app.command("card")(card_command)
    app.command("synth-archive")(synth_archive_command)
    app.add_typer(trust_cli.keys_app, name="keys")
    app.add_typer(weights_app, name="weights")
    app.add_typer(pacs.pacs_app, name="pacs")
    app.command("compare")(compare_command)
    app.add_typer(service_app, name="service")


_mount_lazy_commands()


def main() -> None:
    """Console entry point: medtl errors become a clear message and their exit code, never a traceback."""
    try:
        code = app(standalone_mode=False)  # in this mode click returns a command's exit code instead of exiting
        sys.exit(code if isinstance(code, int) else 0)
    except MedTLError as error:
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, markup=True)
        sys.exit(error.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except Exception as error:  # usage errors (click's, vendored by typer) arrive here in non-standalone mode
        if callable(getattr(error, "show", None)) and isinstance(getattr(error, "exit_code", None), int):
            error.show()
            sys.exit(error.exit_code)
        raise


if __name__ == "__main__":
    main()
