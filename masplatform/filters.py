"""Query-parameter filters that refuse what they do not understand (400), instead of ignoring it."""

from __future__ import annotations

from typing import Any

import django_filters
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


class StrictOrderingFilter(OrderingFilter):
    def get_ordering(self, request, queryset, view):
        params = request.query_params.get(self.ordering_param)
        if params:
            fields = [p.strip() for p in params.split(",") if p.strip()]
            valid = {name for name, _ in self.get_valid_fields(queryset, view, {"request": request})}
            unknown = [f for f in fields if f.lstrip("-") not in valid]
            if unknown:
                raise ValidationError(
                    {self.ordering_param: [f"cannot order by {', '.join(unknown)}; use {', '.join(sorted(valid))}"]}
                )
        return super().get_ordering(request, queryset, view)
