"""Inserting many rows fast (COPY on PostgreSQL, one prepared INSERT run with executemany
elsewhere), without building model
objects. Used for the rows of a definition and of an execution, which are written together and
can number in the tens of thousands (Django's bulk_create spends most of its time per field in
Python there)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection, models


def insert_rows(model: type[models.Model], fields: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """INSERT ``rows`` (tuples of Python values in ``fields`` order) into ``model``'s table.

    JSON fields take Python values (encoded here), foreign keys their ``<name>_id`` value.
    Returns the number of rows. Runs in the caller's transaction.
    """
    meta = model._meta
    columns, placeholders, encoders = [], [], []
    postgres = connection.vendor == "postgresql"
    for name in fields:
        field = meta.get_field(name)
        columns.append(connection.ops.quote_name(field.column))
        if isinstance(field, models.JSONField):
            placeholders.append("%s::jsonb" if postgres else "%s")
            encoders.append(lambda v: None if v is None else json.dumps(v))
        elif isinstance(field, models.UUIDField) or (
            isinstance(field, models.ForeignKey) and isinstance(field.target_field, models.UUIDField)
        ):
            placeholders.append("%s")
            encoders.append(lambda v: v if postgres or v is None else uuid.UUID(str(v)).hex)
        else:
            placeholders.append("%s")
            encoders.append(None)
    sql = (
        f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({', '.join(columns)}) "
        f"VALUES ({', '.join(placeholders)})"
    )
    encoded = [
        tuple(value if encode is None else encode(value) for value, encode in zip(row, encoders, strict=True))
        for row in rows
    ]
    if not encoded:
        return 0
    with connection.cursor() as cursor:
        if postgres:  # COPY: one stream, no per-row statement
            copy_sql = f"COPY {connection.ops.quote_name(meta.db_table)} ({', '.join(columns)}) FROM STDIN"
            with cursor.cursor.copy(copy_sql) as copy:
                for row in encoded:
                    copy.write_row(row)
        else:
            cursor.executemany(sql, encoded)
    return len(encoded)
