"""JSON Schema checks for capability contracts (pure functions)."""

from __future__ import annotations

from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for


def schema_error(schema: Any) -> str | None:
    """Why ``schema`` is not a valid JSON Schema, or None when it is."""
    if not isinstance(schema, dict | bool):
        return f"must be a JSON object (a JSON Schema), not {type(schema).__name__}"
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        return f"invalid JSON Schema at {where}: {exc.message}"
    return None


def schema_differences(old: Any, new: Any, path: str = "", limit: int = 5) -> list[str]:
    """Readable paths where two schemas differ, at most ``limit`` of them."""
    out: list[str] = []

    def walk(a: Any, b: Any, where: str) -> None:
        if len(out) >= limit or a == b:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b), key=str):
                here = f"{where}/{key}"
                if key not in a:
                    out.append(f"{here} added")
                elif key not in b:
                    out.append(f"{here} removed")
                else:
                    walk(a[key], b[key], here)
                if len(out) >= limit:
                    return
        else:
            out.append(f"{where or '/'}: {a!r} -> {b!r}")

    walk(old, new, path)
    return out
