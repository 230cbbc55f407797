"""Generate the JSON Schema files of data_contracts/ from the pydantic models.

Run `python -m medtl.contracts.schemas data_contracts` after changing a contract; a test fails while the committed
files differ from what this writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from medtl.contracts import ALL_CONTRACTS, ContractModel

_UNIT_TEXT = {
    "json": "a JSON document; the file also carries 'contract' and 'contract_version' keys",
    "rows": "one table row (CSV / Parquet / JSON Lines); Parquet files carry the contract in their metadata",
}


def schema_for(model: type[ContractModel]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://medtl.dev/contracts/{model.schema_filename()}"
    schema["title"] = model.contract_title or model.__name__
    schema["x-medtl-contract"] = model.contract_name
    schema["x-medtl-version"] = model.contract_version
    schema["x-medtl-unit"] = _UNIT_TEXT[model.contract_unit]
    return schema


def render(model: type[ContractModel]) -> str:
    return json.dumps(schema_for(model), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for model in ALL_CONTRACTS:
        path = directory / model.schema_filename()
        path.write_text(render(model), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "data_contracts")):
        print(written_path)
