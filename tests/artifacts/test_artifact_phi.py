"""The PHI gate: planted identifiers are caught in every format, masked in the output, and sealing is refused."""

from __future__ import annotations

import base64
import io
import json
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydicom
import pytest
from artifact_support import PHI, Built
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from medtl.artifacts import ArtifactBuilder, PhiTerms, scan_for_phi
from medtl.artifacts.phi import PhiMatcher, mask
from medtl.errors import ConfigError, PHIError


def png_bytes(info: PngInfo | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def kinds(text: str, terms: PhiTerms = PHI) -> list[str]:
    matcher = PhiMatcher(terms)
    return [kind for _, _, kind in matcher.find(text)]


def findings_in(folder: Path, name: str, data: bytes, terms: PhiTerms = PHI) -> list[Any]:
    target = folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return [f for f in scan_for_phi(folder, terms) if f.file == name]


def test_the_built_artifact_is_clean(pristine: Built) -> None:
    assert scan_for_phi(pristine.folder, PHI) == []


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("reviewed by Anna Novak", "patient_name"),
        ("NOVAK, ANNA", "patient_name"),
        ("novak^anna", "patient_name"),
        ("file anna_novak_ct.png", "patient_name"),
        ("Piotr Jan Moreno", "patient_name"),
        ("Pieter van der Berg", "patient_name"),
        ("Ed Li", "patient_name"),
        ("the Novak case", "patient_name_part"),
        ("NOVAK2", "patient_name_part"),
        ("Novak's scan", "patient_name_part"),
        ("novak-ct.png", "patient_name_part"),
        ("dear Pieter,", "patient_name_part"),
        ("id MRN4664774", "patient_id"),
        ("mrn4664774_series", "patient_id"),
        ("numeric 456789 and 00456789", "patient_id"),
        ("born 1980-01-02", "birth_date"),
        ("born 02.01.1980", "birth_date"),
        ("born 01/02/1980", "birth_date"),
        ("born 2/1/1980", "birth_date"),
        ("born 19800102", "birth_date"),
        ("when: 1975-12-31T00:00", "birth_date"),
        ("acc ACC20240001", "accession_number"),
        ("/srv/pacs/incoming/NOVAK_ANNA_2019/CT_1/IM0001.dcm", "source_path"),
        ("from C:\\PACS\\export\\Moreno_Piotr\\IM0002.dcm", "source_path"),
        ("folder CT_1/IM0001.dcm", "source_path"),
        ("1.2.826.0.1.3680043.8.498.37802268467257087237790893393912378827", "source_path_part"),
        ("see /home/alice/results.csv", "absolute_path"),
        ("D:\\studies\\x.dcm", "absolute_path"),
        ("\\\\fileserver\\share\\x", "absolute_path"),
        ("~/private/notes.txt", "absolute_path"),
    ],
)
def test_renderings_are_matched(text: str, kind: str) -> None:
    assert kind in kinds(text), (text, kinds(text))


@pytest.mark.parametrize(
    "text",
    [
        "optimizer: adamw",  # no name part inside a longer word
        "intensity_max: 1.0, max_epochs: 3",  # given name MAX only as a standalone word
        "probability 0.456789 and 0.12",  # id 456789 not as the fractional part of a number
        "sha256 e4564567890abc456789ff",  # nor inside a hex string
        "edit list; lied",  # name parts under 3 letters (LI^ED) are ignored alone
        "van der Waals; de facto",  # particles never match alone
        "198001023 and 219800102",  # dates only as whole numbers
        "pacs incoming data export",  # generic path parts
        "https://json-schema.org/draft/2020-12/schema and n/a and TP/FP",  # not absolute paths
        "P-0123456789abcdef X-000000000000000f",  # pseudonyms
    ],
)
def test_common_text_is_not_flagged(text: str) -> None:
    assert kinds(text) == []


def test_builtin_vocabulary_can_be_switched_off() -> None:
    assert kinds("signed: Max") == []  # "max" is training vocabulary ...
    strict = PhiTerms(patient_names=PHI.patient_names, use_builtin_allowed_words=False)
    assert kinds("signed: Max", strict) == ["patient_name_part"]  # ... unless the site wants it matched
    assert kinds("Max Kowalski") == ["patient_name"]


def test_package_pins_config_words_and_snake_case_are_not_names() -> None:
    terms = PhiTerms(patient_names=["BLACK^RICH", "HEAD^PATIENCE", "CROSS^MAX"])
    text = "black==24.1.0\nrich==13.9\nloss: cross_entropy\nhead: linear\npatience: 5\nmax_epochs: 3"
    assert kinds(text, terms) == []
    assert kinds("Dr Black saw Rich", terms) == ["patient_name_part", "patient_name_part"]
    assert kinds("Patience Head", terms) == ["patient_name"]
    strict = PhiTerms(patient_names=terms.patient_names, use_builtin_allowed_words=False)
    assert kinds("head: linear", strict) == ["patient_name_part"]


def test_allowed_words_suppress_single_parts_only() -> None:
    terms = PhiTerms(patient_names=["NOWAK^ADAM"], allowed_words=["adam"])
    assert kinds("optimizer adam", terms) == []
    assert kinds("Adam Nowak", terms) == ["patient_name"]


def test_mask_never_shows_the_term() -> None:
    assert mask("Anna Novak") == "A*** N****"
    assert mask("1980-01-02") == "1***-0*-0*"
    assert "MRN4664774" not in mask("MRN4664774")


def test_planted_name_in_json_is_caught_and_sealing_refused(tmp_path: Path, build: Any, keys: dict[str, Any]) -> None:
    built = build(
        tmp_path / "a",
        seal=False,
        extra=lambda b: b.add_json("notes.json", {"reviewer": {"comment": "case of Novak, Anna"}}),
    )
    found = [f for f in scan_for_phi(built.folder, PHI) if f.file == "notes.json"]
    assert [(f.kind, f.location) for f in found] == [("patient_name", "$.reviewer.comment")]
    with pytest.raises(PHIError) as caught:
        ArtifactBuilder(built.folder, exist_ok=True).seal(signing_key=keys["private"], phi_terms=PHI)
    message = str(caught.value)
    assert "notes.json" in message and "$.reviewer.comment" in message and "N****, A***" in message
    assert "Novak" not in message and "Anna" not in message
    assert caught.value.exit_code == 7
    assert not (built.folder / "manifest.json").exists() and not (built.folder / "audit.jsonl").exists()
    assert "<!-- medtl:integrity -->" in (built.folder / "model_card.md").read_text()


@pytest.mark.parametrize("chunk", ["tEXt", "zTXt", "iTXt", "iTXt-compressed"])
def test_planted_name_in_png_text_chunks(tmp_path: Path, chunk: str) -> None:
    info = PngInfo()
    if chunk == "tEXt":
        info.add_text("Author", "Anna Novak")
    elif chunk == "zTXt":
        info.add_text("Comment", "patient NOVAK^ANNA", zip=True)
    else:
        info.add_itxt("Description", "Patient: Novák? no — Anna Novak", lang="en", zip=chunk.endswith("compressed"))
    found = findings_in(tmp_path, "figures/roc.png", png_bytes(info))
    assert found and found[0].kind == "patient_name"
    assert chunk.split("-")[0] in found[0].location


def test_png_private_chunk_and_keyword(tmp_path: Path) -> None:
    data = png_bytes()
    body = b"owner=NOVAK ANNA"
    chunk = struct.pack(">I", len(body)) + b"prVt" + body + struct.pack(">I", zlib.crc32(b"prVt" + body))
    data = data[:8] + chunk + data[8:]
    assert [f.kind for f in findings_in(tmp_path, "figures/a.png", data)] == ["patient_name"]


def test_planted_name_in_parquet_string_column(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"scan_id": ["X-1", "X-2", "X-3"], "note": ["ok", "ok", "Pieter van der Berg"], "score": [0.1, 0.2, 0.3]}
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    found = findings_in(tmp_path, "predictions/oof.parquet", buffer.getvalue())
    assert [(f.kind, f.location) for f in found] == [("patient_name", "column 'note'")]


def test_parquet_schema_metadata_list_and_integer_columns(tmp_path: Path) -> None:
    table = pa.table(
        {
            "tags": pa.array([["a"], ["MRN4664774"]], type=pa.list_(pa.string())),
            "number": pa.array([1, 456789], type=pa.int64()),
            "category": pa.array(["x", "ACC20240001"]).dictionary_encode(),
        }
    ).replace_schema_metadata({"origin": "/srv/pacs/incoming/NOVAK_ANNA_2019/CT_1/IM0001.dcm"})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    found = {(f.kind, f.location) for f in findings_in(tmp_path, "t.parquet", buffer.getvalue())}
    assert found == {
        ("source_path", "schema metadata 'origin'"),
        ("patient_id", "column 'tags'"),
        ("patient_id", "column 'number'"),
        ("accession_number", "column 'category'"),
    }


def test_planted_name_in_a_parquet_column_name(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    pd.DataFrame({"novak-score": [1.0]}).to_parquet(buffer, index=False)
    assert {f.location for f in findings_in(tmp_path, "t.parquet", buffer.getvalue())} >= {"column name"}


@pytest.mark.parametrize(
    ("name", "data", "location"),
    [
        ("config.yaml", b"lr: 0.1  # tuned on Anna Novak's scan\n", "line 1"),
        ("config.yml", b'note: "\\x4eovak"\n', "document 0: $.note"),
        ("metrics/table.csv", b"a,b\n1,born 1980-01-02\n", "row 2, column 2"),
        ("metrics/table.tsv", b"a\tb\n1\tACC20240001\n", "row 2, column 2"),
        ("report.md", b"# Report\n\nCase MRN4664774\n", "line 3"),
        ("notes.txt", b"x\nsee C:\\PACS\\export\\Moreno_Piotr\\IM0002.dcm\n", "line 2"),
        ("events.jsonl", b'{"a": 1}\n{"who": "Piotr Moreno"}\n', "line 2: $.who"),
        ("report.html", b"<p>&#78;ovak, &#65;nna</p>\n", "line 1 (entities decoded)"),
        ("report.htm", b"<!-- by Anna Novak -->\n", "line 1"),
        ("data.json", b'{"birth": 19800102}', "$.birth"),
        ("data.json", b'{"MRN4664774": 1}', "$ (key)"),
    ],
)
def test_planted_terms_in_text_formats(tmp_path: Path, name: str, data: bytes, location: str) -> None:
    found = findings_in(tmp_path, name, data)
    assert location in [f.location for f in found], found


def test_png_embedded_in_html_is_checked(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text("Author", "Anna Novak")
    encoded = base64.b64encode(png_bytes(info)).decode()
    data = f'<img src="data:image/png;base64,{encoded}">\n'.encode()
    found = findings_in(tmp_path, "report.html", data)
    assert [f.kind for f in found] == ["patient_name"] and found[0].location.startswith("embedded image/png #1")


def test_safetensors_header_metadata_is_checked(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save

    data = save({"w": torch.zeros(2)}, metadata={"trained_on": "NOVAK^ANNA"})
    found = findings_in(tmp_path, "weights/final.safetensors", data)
    assert [(f.kind, f.location) for f in found] == [("patient_name", "__metadata__.trained_on")]


def test_file_names_are_checked(tmp_path: Path) -> None:
    found = findings_in(tmp_path, "figures/novak-roc.png", png_bytes())
    assert [(f.kind, f.location) for f in found] == [("patient_name_part", "file name")]


def test_the_artifact_folder_location_itself_is_flagged(tmp_path: Path) -> None:
    folder = tmp_path / "some-where" / "artifact_01"
    folder.mkdir(parents=True)
    found = findings_in(folder, "config.json", json.dumps({"out": str(folder / "weights")}).encode(), PhiTerms())
    assert [f.kind for f in found] in (["source_path"], ["absolute_path"])


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("weights/model.pt", b"\x80\x04K\x01.", "pickle"),
        ("learner.pkl", pickle.dumps({"a": 1}), "pickle"),
        ("disguised.json", pickle.dumps({"a": 1}), "pickle"),
        ("archive.png", b"PK\x03\x04rest-of-zip", "pickle"),
        ("blob.dat", b"\x00\x01", "unsupported_format"),
        ("README", b"hello", "unsupported_format"),
        ("broken.json", b"{not json", "unreadable"),
        ("latin.txt", "Müller".encode("latin-1"), "unreadable"),
        ("tags.yaml", b"!!python/object/apply:os.system ['true']\n", "unreadable"),
        ("fake.png", b"GIF89a", "unreadable"),
        ("fake.parquet", b"PAR1 nonsense", "unreadable"),
    ],
)
def test_unsafe_or_unknown_formats_are_refused(tmp_path: Path, name: str, data: bytes, kind: str) -> None:
    assert kind in [f.kind for f in findings_in(tmp_path, name, data, PhiTerms())]


def test_npy_numeric_allowed_object_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(4.0))
    assert findings_in(tmp_path, "a.npy", buffer.getvalue(), PhiTerms()) == []
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert [f.kind for f in findings_in(tmp_path, "b.npy", buffer.getvalue(), PhiTerms())] == ["pickle"]


def test_phi_terms_file_round_trip_and_privacy(tmp_path: Path) -> None:
    path = tmp_path / "phi_terms.json"
    path.write_text(json.dumps(PHI.model_dump()))
    loaded = PhiTerms.load(path)
    assert loaded.patient_names == PHI.patient_names
    assert "NOVAK" not in repr(loaded) and "NOVAK" not in str(loaded)
    path.write_text(json.dumps({"patient_names": "NOVAK^ANNA", "typo": ["x"]}))
    with pytest.raises(ConfigError) as caught:
        PhiTerms.load(path)
    assert "NOVAK" not in str(caught.value) and "patient_names" in str(caught.value) and "typo" in str(caught.value)
    with pytest.raises(ConfigError, match="does not exist"):
        PhiTerms.load(tmp_path / "missing.json")


def test_a_name_from_the_synthetic_cohort_headers_is_caught(tmp_path: Path, build: Any, keys: dict[str, Any]) -> None:
    synth = pytest.importorskip("medtl.datasets.synth")
    cohort = tmp_path / "cohort"
    synth.make_cohort(cohort, patients=2, seed=3)
    first = sorted((cohort / "dicom").rglob("*.dcm"))[0]
    header = pydicom.dcmread(first, stop_before_pixels=True)
    terms = PhiTerms(  # what ingest records in DATASET/private/phi_terms.json
        patient_names=[str(header.PatientName)],
        patient_ids=[str(header.PatientID)],
        birth_dates=[str(header.PatientBirthDate)],
        accession_numbers=[str(header.AccessionNumber)],
        paths=[first.relative_to(cohort).as_posix(), str(cohort.resolve())],
    )
    family = str(header.PatientName).split("^")[0]
    built = build(tmp_path / "clean", signing_key=keys["private"], phi_terms=terms)
    assert built.manifest_hash  # the real artifact passes with the cohort's terms ...
    planted = build(
        tmp_path / "planted",
        seal=False,
        extra=lambda b: b.add_json("notes.json", {"note": f"outlier: {family.title()}"}),
    )
    with pytest.raises(PHIError) as caught:  # ... and a planted family name does not
        ArtifactBuilder(planted.folder, exist_ok=True).seal(signing_key=keys["private"], phi_terms=terms)
    assert "notes.json" in str(caught.value) and "patient_name_part" in str(caught.value)
    assert family.title() not in str(caught.value)
    rows = pd.read_csv(cohort / "labels.csv")  # the clinician's spreadsheet renders names as "Family, Given"
    spreadsheet_name = rows.loc[rows["patient_id"] == str(header.PatientID), "patient_name"].iloc[0]
    assert "patient_name" in kinds(f"name: {spreadsheet_name}", terms)


def test_parquet_date_and_binary_columns(tmp_path: Path) -> None:
    import datetime as dt

    table = pa.table({"born": pa.array([dt.date(1980, 1, 2)]), "raw": pa.array([b"MRN4664774"])})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    found = {(f.kind, f.location) for f in findings_in(tmp_path, "t.parquet", buffer.getvalue())}
    assert found == {("birth_date", "column 'born'"), ("patient_id", "column 'raw'")}


def test_markdown_embedded_png_is_checked(tmp_path: Path) -> None:
    info = PngInfo()
    info.add_text("Comment", "NOVAK^ANNA")
    encoded = base64.b64encode(png_bytes(info)).decode()
    found = findings_in(tmp_path, "model_card.md", f"![roc](data:image/png;base64,{encoded})\n".encode())
    assert [f.kind for f in found] == ["patient_name"]


def test_path_parts_need_a_digit_and_respect_allowed_words() -> None:
    terms = PhiTerms(paths=["/home/alice/projects/chest-ct-study/cohort_2019/x.dcm"])
    assert kinds("model chest-ct-study", terms) == []
    assert kinds("data from cohort_2019", terms) == ["source_path_part"]
    allowed = PhiTerms(paths=terms.paths, allowed_words=["cohort_2019"])
    assert kinds("data from cohort_2019", allowed) == []
    assert kinds("/home/alice/projects/chest-ct-study/cohort_2019/x.dcm", allowed) == ["source_path"]


def test_an_artifact_folder_named_like_the_model_is_not_a_finding(
    tmp_path: Path, build: Any, keys: dict[str, Any]
) -> None:
    built = build(
        tmp_path / "models" / "tinynet-demo_v1",
        signing_key=keys["private"],
        extra=lambda b: b.add_json("extra.json", {"name": "tinynet-demo_v1", "out": "models/tinynet-demo_v1"}),
    )
    assert len(built.manifest_hash) == 64
