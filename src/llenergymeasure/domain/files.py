"""Reading a result model from a JSON file, with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from llenergymeasure.exceptions import ResultFileError

ModelT = TypeVar("ModelT", bound=BaseModel)


def validate_json_file(model: type[ModelT], path: Path, what: str) -> ModelT:
    """``model`` validated from the JSON file ``path``.

    Raises ResultFileError (naming the file, the first problem and the file size, on one
    line) when the file is not one: truncated, not JSON, another schema. OSError (a missing
    or unreadable file) passes through.
    """
    data = Path(path).read_bytes()
    try:
        return model.model_validate_json(data)
    except ValidationError as e:
        errors = e.errors()
        first = errors[0] if errors else {"msg": str(e), "loc": ()}
        where = ".".join(str(x) for x in first.get("loc", ()))
        problem = f"{where}: {first['msg']}" if where else str(first["msg"])
        raise ResultFileError(
            path, f"not a valid {what} file ({problem}; {len(data):,} bytes)"
        ) from e
