"""Audited model artifacts: self-describing, signed, tamper-evident, PHI-free (layout and rules: README.md here).

Write: ArtifactBuilder(folder).add_weights/add_json/add_yaml/add_table/add_metadata/add_environment/add_model_card,
then seal(folder, signing_key=..., phi_terms=...). Read: open_verified(folder) — never open an artifact's files
directly. Trust: resolve_trust() (artifact keys, approver keys, development flags); whether an artifact is approved
is decided only by decisions.judge, exposed as VerifiedArtifact.status.
"""

from medtl.artifacts.audit import append_event
from medtl.artifacts.builder import ArtifactBuilder, seal
from medtl.artifacts.card import render_model_card
from medtl.artifacts.decisions import ApprovalStatus
from medtl.artifacts.keys import (
    APPROVER_KEYS_ENV,
    REVIEWER_KEY_ENV,
    SIGNING_KEY_ENV,
    TRUSTED_KEYS_ENV,
    generate_signing_key,
    key_fingerprint,
    load_approver_keys,
    load_trusted_keys,
    public_key_hex,
    resolve_signing_key,
)
from medtl.artifacts.phi import Finding, PhiTerms, scan_for_phi
from medtl.artifacts.provenance import collect_provenance, environment_lock, environment_text
from medtl.artifacts.reader import VerifiedArtifact, load_artifact_weights, open_verified
from medtl.artifacts.trust import TrustSettings, resolve_trust
from medtl.artifacts.verify import VerificationReport, verify

__all__ = [
    "APPROVER_KEYS_ENV",
    "REVIEWER_KEY_ENV",
    "SIGNING_KEY_ENV",
    "TRUSTED_KEYS_ENV",
    "ApprovalStatus",
    "ArtifactBuilder",
    "Finding",
    "PhiTerms",
    "TrustSettings",
    "VerificationReport",
    "VerifiedArtifact",
    "append_event",
    "collect_provenance",
    "environment_lock",
    "environment_text",
    "generate_signing_key",
    "key_fingerprint",
    "load_approver_keys",
    "load_artifact_weights",
    "load_trusted_keys",
    "open_verified",
    "public_key_hex",
    "render_model_card",
    "resolve_signing_key",
    "resolve_trust",
    "scan_for_phi",
    "seal",
    "verify",
]
