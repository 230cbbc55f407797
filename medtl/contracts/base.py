"""Validation machinery shared by every contract.

Why pydantic models as the single source of truth: the JSON Schemas in data_contracts/ are generated from them (a
test keeps the committed files equal to the generated ones), and the same models validate every file that a stage
reads or writes. A violation raises DataContractError listing every problem, not just the first.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from medtl.errors import ContractProblem, DataContractError

M = TypeVar("M", bound="ContractModel")
_MAX_VALUE_CHARS = 80
# No JSON document medtl writes comes near this (the largest, an archive's ingest_state.json, holds ~200 bytes a file)
MAX_DOCUMENT_BYTES = 1024**3


class Strict(BaseModel):
    """A nested object inside a contract: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")  # NaN as the standard library writes it


class ContractModel(Strict):
    """A document or a table row that crosses a stage boundary. Subclasses set the contract's name and version."""

    contract_name: ClassVar[str]
    contract_version: ClassVar[int] = 1
    # "json": one document per file; "rows": one model per row of a table (CSV or Parquet).
    contract_unit: ClassVar[str] = "json"
    contract_title: ClassVar[str] = ""

    @classmethod
    def schema_filename(cls) -> str:
        return f"{cls.contract_name}.v{cls.contract_version}.schema.json"


def _safe_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


def _problems(error: ValidationError, prefix: str) -> list[ContractProblem]:
    problems = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        location = f"{prefix}{path}" if path else prefix.rstrip(", ") or "document"
        value = None if item["type"] == "missing" else _safe_value(item.get("input"))
        problems.append(ContractProblem(location, item["msg"], value))
    return problems


def validate_document(model: type[M], data: Any, *, where: str | None = None) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise DataContractError(model.schema_filename(), _problems(error, "$."), where=where) from None


def validate_rows(
    model: type[M],
    records: Iterable[dict[str, Any]],
    *,
    where: str | None = None,
    first_row_number: int = 0,
    contract: type[ContractModel] | None = None,
) -> list[M]:
    """Validate every row and report all failing cells as (row, column, value, rule); `contract`: the document
    the rows belong to, where `model` is a part of one rather than a contract of its own."""
    rows: list[M] = []
    problems: list[ContractProblem] = []
    for number, record in enumerate(records, start=first_row_number):
        try:
            rows.append(model.model_validate(record))
        except ValidationError as error:
            problems.extend(_problems(error, f"row {number}, column "))
    if problems:
        raise DataContractError((contract or model).schema_filename(), problems, where=where)
    return rows


def check_columns(
    model: type[BaseModel],
    columns: dict[str, list[Any]],
    *,
    where: str | None = None,
    first_row_number: int = 0,
    contract: type[ContractModel] | None = None,
) -> None:
    """Check a table given as columns (name: one value per row) against its row contract; every failing cell is
    reported as (row, column, value, rule), as by validate_rows.

    Why columns: one list per field is checked in one pass of pydantic's core, without a model per row: about five
    times faster on an archive's manifest, which a re-run reads and writes whole. A row contract with validators of
    its own, or one that allows extra columns, is checked row by row (the checks would not carry over). `contract`:
    the document the table belongs to, where `model` is a part of one (a report's file records)."""
    checker = _column_checker(model)
    n_rows = max((len(values) for values in columns.values()), default=0)
    if n_rows == 0:  # no cell to check (as row by row): an empty table may leave its columns out
        return
    if checker is None:
        validate_rows(model, rows_of(columns), where=where, first_row_number=first_row_number, contract=contract)
        return
    filled = dict(columns)
    for name, info in model.model_fields.items():
        if name not in filled and not info.is_required():  # a column the table leaves out: its default, as per row
            filled[name] = [info.get_default(call_default_factory=True) for _ in range(n_rows)]
    try:
        checker.model_validate(filled)
    except ValidationError as error:
        name = (contract or model).schema_filename()  # type: ignore[attr-defined]
        raise DataContractError(name, _cell_problems(error, first_row_number), where=where) from None


def rows_of(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The rows of a table given as columns of equal length."""
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


@functools.cache
def _column_checker(model: type[BaseModel]) -> type[BaseModel] | None:
    """A model with one list per field of `model`, each item under that field's type and constraints."""
    decorators = model.__pydantic_decorators__
    if decorators.model_validators or decorators.field_validators or model.model_config.get("extra") != "forbid":
        return None
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        item = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[name] = (list[item], ...)  # type: ignore[valid-type]
    return create_model(f"{model.__name__}Columns", __config__=ConfigDict(extra="forbid"), **fields)


def _cell_problems(error: ValidationError, first_row_number: int) -> list[ContractProblem]:
    problems = []
    for item in error.errors():
        column, *rest = item["loc"]
        if rest and isinstance(rest[0], int):  # (column, row, part of the cell ...)
            inner = "".join(f".{part}" for part in rest[1:])
            location = f"row {rest[0] + first_row_number}, column {column}{inner}"
        else:  # the column as a whole: missing, or not a column of this contract
            location = f"column {column}"
        whole_column = item["type"] in ("missing", "extra_forbidden")  # no cell to quote
        value = None if whole_column else _safe_value(item.get("input"))
        problems.append(ContractProblem(location, item["msg"], value))
    return problems


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write through a temporary file and rename, so an interrupted run never leaves half a contract file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def contract_document(document: ContractModel) -> dict[str, Any]:
    """The JSON form of a contract document: its contract name and version first, then its content."""
    return {
        "contract": document.contract_name,
        "contract_version": document.contract_version,
        **document.model_dump(mode="json"),
    }


def write_json(document: ContractModel, path: str | Path) -> None:
    """Indented UTF-8 JSON, `contract_document`'s content, written by the model's own serializer: the standard
    library's indented encoder is pure Python, and an ingest report or state lists every file of an archive (made
    into Python lists first, as `contract_document` does, its report took twice as long). NaN and infinities stay
    as the standard library writes them (and reads them back)."""
    body = type(document).__pydantic_serializer__.to_json(document, indent=2)
    head = f'{{\n  "contract": {json.dumps(document.contract_name)},\n  "contract_version": {document.contract_version}'
    content = b",\n" + body[2:] if body != b"{}" else b"\n}"  # the model's members after the contract's name
    atomic_write_bytes(path, head.encode("utf-8") + content + b"\n")


def read_json(model: type[M], path: str | Path) -> M:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_DOCUMENT_BYTES:  # parsing allocates several times the file's size
            raise DataContractError(
                model.schema_filename(),
                [ContractProblem("file", f"{size:,} bytes: larger than any document medtl writes")],
                where=path.name,
                fix=f"this is not a {path.name} medtl wrote; pass the one the stage that writes it made",
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _missing(model, path) from None
    except OSError as error:  # a folder in its place, no permission: the message would quote the path
        raise DataContractError(
            model.schema_filename(),
            [ContractProblem("file", f"cannot be read ({type(error).__name__})")],
            where=path.name,
            fix=f"check that {path.name} is a readable file",
        ) from None
    try:  # one pass of pydantic's own JSON parser: 1.2-1.7x faster on an archive's state and report
        document = _file_model(model).model_validate_json(raw)
    except ValidationError:  # the slower path below says precisely what is wrong
        return _read_json_in_steps(model, raw, path.name)
    fields = {name: getattr(document, name) for name in model.model_fields}
    return model.model_construct(_fields_set=document.model_fields_set & set(model.model_fields), **fields)


_HEADER_KEYS = ("contract", "contract_version")


def _missing(model: type[ContractModel], path: Path) -> DataContractError:
    return DataContractError(
        model.schema_filename(),
        [ContractProblem("file", "the file does not exist")],
        where=path.name,
        fix=f"run the stage that writes {path.name} first",
    )


@functools.cache
def _file_model(model: type[M]) -> type[M]:
    """`model` with the file's two header keys as fields that accept only this contract's name and version."""
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{model.__name__}File",
        __base__=model,
        file_contract=(Literal[model.contract_name], Field(alias="contract")),
        file_contract_version=(Literal[model.contract_version], Field(alias="contract_version")),
    )


def _read_json_in_steps(model: type[M], raw: bytes, where: str) -> M:
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DataContractError(
            model.schema_filename(), [ContractProblem("file", "not UTF-8 text")], where=where
        ) from None
    except json.JSONDecodeError as error:
        raise DataContractError(
            model.schema_filename(), [ContractProblem(f"line {error.lineno}", "not valid JSON")], where=where
        ) from None
    except RecursionError:
        raise DataContractError(
            model.schema_filename(),
            [ContractProblem("file", "nested deeper than any document medtl writes")],
            where=where,
        ) from None
    if not isinstance(data, dict):
        raise DataContractError(
            model.schema_filename(), [ContractProblem("document", "not a JSON object")], where=where
        )
    _check_header(model, data, where)
    data = {key: value for key, value in data.items() if key not in _HEADER_KEYS}
    return validate_document(model, data, where=where)


def _check_header(model: type[ContractModel], data: dict[str, Any], where: str) -> None:
    name, version = data.get("contract"), data.get("contract_version")
    if name != model.contract_name or version != model.contract_version:
        raise DataContractError(
            model.schema_filename(),
            [
                ContractProblem(
                    "$.contract",
                    f"expected contract {model.contract_name!r} version {model.contract_version}",
                    _safe_value(f"{name} v{version}"),
                )
            ],
            where=where,
            fix="the file was written by an incompatible medtl version or is not this kind of file; "
            "see data_contracts/README.md for the compatibility rules",
        )


_TABLE_KEY = b"medtl_contract"


def write_table(model: type[ContractModel], frame: pd.DataFrame, path: str | Path) -> None:
    """Validate every row, then write Parquet that records its contract in the file's metadata."""
    validate_frame(model, frame, where=Path(path).name)
    _write_contract_table(model, pa.Table.from_pandas(frame, preserve_index=False), path)


def _write_contract_table(model: type[ContractModel], table: pa.Table, path: str | Path) -> None:
    header = json.dumps({"contract": model.contract_name, "contract_version": model.contract_version}).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _TABLE_KEY: header})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


def write_rows(model: type[ContractModel], rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """`write_table` for a stage that holds plain rows: each validated, then written column by column in the
    contract's field order, without a pandas round trip (a re-run writes an archive's whole manifest)."""
    columns = {name: [row.get(name) for row in rows] for name in model.model_fields}
    unknown = set().union(*rows).difference(columns)
    given = {**columns, **{name: [row.get(name) for row in rows] for name in sorted(unknown)}}
    check_columns(model, given, where=Path(path).name)
    _write_contract_table(model, pa.Table.from_pydict(columns), path)


def read_table(model: type[ContractModel], path: str | Path) -> pd.DataFrame:
    path = Path(path)
    frame = _read_contract_table(model, path).to_pandas()
    validate_frame(model, frame, where=path.name)
    return frame


def read_rows(model: type[ContractModel], path: str | Path) -> list[dict[str, Any]]:
    """The rows of a contract table as plain Python values (lists, ints, floats, None), each checked against its
    row contract: for a stage that works on rows, without a round trip through pandas (which also turns an
    optional integer column into floats)."""
    path = Path(path)
    columns = _read_contract_table(model, path).to_pydict()
    check_columns(model, columns, where=path.name)
    return rows_of(columns)


def _read_contract_table(model: type[ContractModel], path: Path) -> pa.Table:
    if not path.exists():
        raise _missing(model, path)
    try:
        with pq.ParquetFile(path) as parquet:  # not pq.read_table: its dataset machinery costs ~0.1 s to import
            table = parquet.read()
        header = json.loads((table.schema.metadata or {}).get(_TABLE_KEY, b"{}"))
    except (pa.ArrowException, OSError, ValueError):  # Arrow's message quotes the path: not repeated here
        raise DataContractError(
            model.schema_filename(),
            [ContractProblem("file", "not a readable Parquet file (truncated, corrupt or another format)")],
            where=path.name,
            fix=f"run the stage that writes {path.name} again",
        ) from None
    _check_header(model, header if isinstance(header, dict) else {}, path.name)
    return table


def validate_frame(model: type[ContractModel], frame: pd.DataFrame, *, where: str | None = None) -> pd.DataFrame:
    """Every row of a table checked against its row contract (column by column where it allows, see
    check_columns); the frame is returned unchanged."""
    check_columns(model, _columns(frame), where=where)
    return frame


def table_contract(path: str | Path) -> tuple[str | None, int | None]:
    """(contract name, version) a Parquet file records, without reading its rows: lets a stage that appends to an
    existing file say which version it found before refusing it."""
    header = json.loads((pq.read_schema(path).metadata or {}).get(_TABLE_KEY, b"{}"))
    return header.get("contract"), header.get("contract_version")


def _columns(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """Columns of plain Python values (numpy arrays to lists, NaN/NA to None) so pydantic judges content, not dtype.

    Through Arrow, whose conversion does this in C++: 3.5x faster than the per-cell loop below on a 2,000-row
    manifest, with the same values (a re-run reads and writes the whole manifest). A column Arrow cannot type
    (mixed Python objects, as a hostile or broken file may hold) takes the loop, so pydantic still says which cell
    is wrong."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False).to_pydict()
    except (pa.ArrowException, TypeError, ValueError):
        rows = _records_by_cell(frame)
        return {str(name): [row[name] for row in rows] for name in frame.columns}


def _records_by_cell(frame: pd.DataFrame) -> Sequence[dict[str, Any]]:
    records = []
    for record in frame.to_dict(orient="records"):
        clean = {}
        for key, value in record.items():
            if hasattr(value, "tolist"):
                value = value.tolist()
            elif value is not None and not isinstance(value, (list, dict, str)) and pd.isna(value):
                value = None
            clean[key] = value
        records.append(clean)
    return records
