"""Query parameters of the workflow and execution lists."""

from __future__ import annotations

import django_filters

from masplatform.filters import UtcIsoDateTimeFilter
from workflows.models import Execution, ExecutionStatus, Workflow


class WorkflowFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Workflow
        fields = ["name"]


class ExecutionFilter(django_filters.FilterSet):
    workflow = django_filters.NumberFilter(field_name="workflow_id", min_value=1, max_value=2**63 - 1)
    workflow_name = django_filters.CharFilter()
    status = django_filters.MultipleChoiceFilter(choices=ExecutionStatus.choices)
    requested_by = django_filters.CharFilter()
    since = UtcIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Execution
        fields = ["workflow", "workflow_name", "status", "requested_by", "since"]
