"""Request serializers that take each field in the JSON type the schema documents.

DRF coerces: a number is taken for a string field, ``false`` for a float, ``"3"`` for an
integer. The OpenAPI schema promises the types, so a body of another type is a 400 naming
the field, as the schema says it would be.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

_TYPES: list[tuple[type, tuple[type, ...], str]] = [
    (serializers.BooleanField, (bool,), "a boolean"),
    (serializers.ChoiceField, (str,), "a string"),
    (serializers.CharField, (str,), "a string"),
    (serializers.IntegerField, (int,), "an integer"),
    (serializers.FloatField, (int, float), "a number"),
]


class StrictTypesMixin:
    """Refuse a JSON value of another type than the field's before DRF would coerce it."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            errors = {}
            for name, field in self.fields.items():  # type: ignore[attr-defined]
                if field.read_only or field.field_name not in data:
                    continue
                value = data[field.field_name]
                if value is None:
                    continue  # allow_null decides
                if isinstance(field, serializers.ListField) and isinstance(value, list):
                    field, value = field.child, next((v for v in value if v is not None), None)
                    if value is None:
                        continue
                for field_class, accepted, words in _TYPES:
                    if isinstance(field, field_class):
                        if not isinstance(value, accepted) or (bool not in accepted and isinstance(value, bool)):
                            errors[name] = [f"must be {words}, got {type(value).__name__}"]
                        break
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)  # type: ignore[misc]
