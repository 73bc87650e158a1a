"""Query parameters of the workflow and execution lists."""

from __future__ import annotations

import django_filters

from workflows.models import Execution, ExecutionStatus, Workflow


class WorkflowFilter(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Workflow
        fields = ["name"]


class ExecutionFilter(django_filters.FilterSet):
    workflow = django_filters.NumberFilter(field_name="workflow_id")
    workflow_name = django_filters.CharFilter()
    status = django_filters.MultipleChoiceFilter(choices=ExecutionStatus.choices)
    requested_by = django_filters.CharFilter()
    since = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Execution
        fields = ["workflow", "workflow_name", "status", "requested_by", "since"]
