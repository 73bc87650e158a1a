"""Index types that Django's portable ``models.Index`` does not offer, with a fallback elsewhere."""

from __future__ import annotations

from typing import Any

from django.db import models


class InsertionOrderIndex(models.Index):
    """For a column that grows with the insertion order (a log's timestamp): a BRIN index on
    PostgreSQL, a B-tree on other databases.

    BRIN keeps one summary (min, max) per range of table pages, so an insert costs nearly
    nothing, where a B-tree adds an entry per row; range filters (``at < cutoff``,
    ``at >= since``) still read only the page ranges that can match. It cannot return rows in
    order: list such a table by its primary key, which grows in the same order.
    """

    def create_sql(self, model: type[models.Model], schema_editor: Any, using: str = "", **kwargs: Any) -> Any:
        if schema_editor.connection.vendor == "postgresql":
            using = " USING brin"
        return super().create_sql(model, schema_editor, using=using, **kwargs)
