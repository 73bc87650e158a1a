"""Model instances from the rows of hand-written SQL, converted as the ORM converts its own.

For hot paths whose query is fixed: the SQL is written once, and this turns each
returned row into an instance (``Model.from_db``) after the same database
converters the ORM applies (JSON, UUID, datetimes on SQLite, ...), computed once
per model, field list and database vendor.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from django.db import models


def columns(model: type[models.Model], fields: Sequence[models.Field], connection: Any, alias: str) -> str:
    """``alias.col1, alias.col2, ...`` for ``fields``, quoted for ``connection``."""
    qn = connection.ops.quote_name
    return ", ".join(f"{alias}.{qn(f.column)}" for f in fields)


@functools.cache
def _converters(model: type[models.Model], fields: tuple[models.Field, ...], vendor: str) -> list[tuple[Any, list]]:
    from django.db import connection

    out = []
    for field in fields:
        col = field.get_col(model._meta.db_table)
        out.append((col, connection.ops.get_db_converters(col) + col.get_db_converters(connection)))
    return out


def convert(model: type[models.Model], fields: Sequence[models.Field], row: Sequence[Any], connection: Any) -> list:
    """The values of ``row`` (one per field of ``fields``) as the ORM would load them."""
    values = []
    for (col, converters), value in zip(_converters(model, tuple(fields), connection.vendor), row, strict=True):
        for converter in converters:
            value = converter(value, col, connection)
        values.append(value)
    return values


def instance(model: type[models.Model], fields: Sequence[models.Field], row: Sequence[Any], connection: Any):
    """An instance of ``model`` loaded from ``row`` (fields not in ``fields`` are deferred)."""
    return model.from_db(connection.alias, [f.attname for f in fields], convert(model, fields, row, connection))
