"""Query-parameter filters that refuse what they do not understand (400), instead of ignoring it."""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter

TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no")


class StrictBooleanFilter(django_filters.TypedChoiceFilter):
    """true/1/yes or false/0/no; anything else is a 400 naming the parameter."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("choices", [(v, v) for v in (*TRUE, *FALSE)])
        kwargs.setdefault("coerce", lambda value: value in TRUE)
        super().__init__(*args, **kwargs)


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 date-time, turned into UTC here: an offset PostgreSQL refuses (beyond +-15:59) or a
    moment outside years 1-9999 in UTC is a 400 naming the parameter, not a database error."""

    def to_python(self, value: Any) -> Any:
        if value == "":  # given but empty: not "no filter"
            raise forms.ValidationError("give an ISO 8601 date-time", code="required")
        result = super().to_python(value)
        if result is None:
            return None
        try:
            return result.astimezone(UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError(f"{value!r} is out of range (years 1-9999 in UTC)", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class StrictOrderingFilter(OrderingFilter):
    """``ordering=a,-b``: every item must be an ordering field exactly (no blanks, no spaces)."""

    def get_ordering(self, request, queryset, view):
        params = request.query_params.get(self.ordering_param)
        if params:
            fields = params.split(",")
            valid = {name for name, _ in self.get_valid_fields(queryset, view, {"request": request})}
            unknown = [f for f in fields if f.lstrip("-") not in valid]
            if unknown:
                raise ValidationError(
                    {self.ordering_param: [f"cannot order by {', '.join(unknown)}; use {', '.join(sorted(valid))}"]}
                )
        return super().get_ordering(request, queryset, view)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        names = getattr(view, "ordering_fields", None)
        if isinstance(names, list | tuple) and names:
            one = "-?(" + "|".join(re.escape(name) for name in names) + ")"
            for parameter in parameters:
                parameter["description"] = f"Comma-separated, '-' for descending: {', '.join(names)}"
                parameter["schema"] = {"type": "string", "pattern": f"^({one}(,{one})*)?$"}
        return parameters
