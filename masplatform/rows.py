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


# (what, model, id of a field list, vendor) -> (the list, its converters, preparers or layout): a lookup
# without hashing the fields (each Field's __hash__ is a Python call: 28 of them per lookup of all an
# Invocation's fields). The entry keeps its list alive, so that the id is not reused while the entry
# exists. Pass tuples (or lists never changed after their first use).
_by_list: dict[tuple[str, type[models.Model], int, str], tuple[Sequence[models.Field], list]] = {}


def _for_list(kind: str, build: Any, model: type[models.Model], fields: Sequence[models.Field], vendor: str) -> list:
    key = (kind, model, id(fields), vendor)
    hit = _by_list.get(key)
    if hit is not None and hit[0] is fields:
        return hit[1]
    if len(_by_list) > 512:  # callers pass a few constant lists; a caller building a new one each time
        _by_list.clear()
    value = build(model, tuple(fields), vendor)
    _by_list[key] = (fields, value)
    return value


def convert(model: type[models.Model], fields: Sequence[models.Field], row: Sequence[Any], connection: Any) -> list:
    """The values of ``row`` (one per field of ``fields``) as the ORM would load them."""
    values = []
    for (col, converters), value in zip(
        _for_list("convert", _converters, model, fields, connection.vendor), row, strict=True
    ):
        for converter in converters:
            value = converter(value, col, connection)
        values.append(value)
    return values


def _layout(model: type[models.Model], fields: tuple[models.Field, ...], vendor: str) -> list[int | None]:
    """For each concrete field of ``model``, its position in ``fields`` (None: deferred)."""
    position = {f.attname: i for i, f in enumerate(fields)}
    return [position.get(f.attname) for f in model._meta.concrete_fields]


def instance(model: type[models.Model], fields: Sequence[models.Field], row: Sequence[Any], connection: Any):
    """An instance of ``model`` loaded from ``row`` (fields not in ``fields`` are deferred), as
    ``Model.from_db`` makes it, with the deferred fields' places worked out once per field list."""
    values = convert(model, fields, row, connection)
    if model.from_db.__func__ is not models.Model.from_db.__func__:  # a model with its own from_db
        return model.from_db(connection.alias, [f.attname for f in fields], values)
    layout = _for_list("layout", _layout, model, fields, connection.vendor)
    new = model(*[models.DEFERRED if i is None else values[i] for i in layout])
    new._state.adding = False
    new._state.db = connection.alias
    return new


# Fields whose value goes to the database as it is (``get_db_prep_save`` only coerces it to str or
# bool); integers too where the backend does not wrap them (PostgreSQL's does: Int2, Int4, Int8). The
# others (JSON, UUID, floats, dates and times, ...) are converted by the field, as the ORM does.
_AS_IS = (models.CharField, models.TextField, models.BooleanField)


@functools.cache
def _preparers(model: type[models.Model], fields: tuple[models.Field, ...], vendor: str) -> list[tuple[str, Any]]:
    from django.db import connection
    from django.db.backends.base.operations import BaseDatabaseOperations

    plain_integers = type(connection.ops).adapt_integerfield_value is BaseDatabaseOperations.adapt_integerfield_value
    out = []
    for field in fields:
        target = field.target_field if field.is_relation else field
        as_is = isinstance(target, _AS_IS) or (plain_integers and isinstance(target, models.IntegerField))
        out.append((field.attname, None if as_is else field.get_db_prep_save))
    return out


def db_values(model: type[models.Model], fields: Sequence[models.Field], obj: models.Model, connection: Any) -> list:
    """The values of ``obj``'s ``fields`` as the ORM would send them to ``connection`` on save (None as
    NULL); for hand-written INSERTs on hot paths, without a ``get_db_prep_save`` call per plain field."""
    values = []
    for attname, prepare in _for_list("prepare", _preparers, model, fields, connection.vendor):
        value = getattr(obj, attname)
        values.append(value if prepare is None or value is None else prepare(value, connection))
    return values
