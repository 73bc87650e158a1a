"""Workflow API: thin views over ``workflows.services``."""

from __future__ import annotations

from django.db.models import Count
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from masplatform.exceptions import InvalidInput
from masplatform.permissions import IsStaffOrReadOnlyUser, owner_scope, requester
from masplatform.views import NamedNotFoundMixin
from workflows import services
from workflows.filters import ExecutionFilter, WorkflowFilter
from workflows.models import Execution, Workflow
from workflows.serializers import (
    ExecuteSerializer,
    ExecutionDetailSerializer,
    ExecutionSerializer,
    WorkflowInputSerializer,
    WorkflowListSerializer,
    WorkflowSerializer,
)


def _body(request: Request) -> dict:
    if not isinstance(request.data, dict):
        raise InvalidInput({"non_field_errors": ["send a JSON object"]})
    return dict(request.data)


@extend_schema_view(
    list=extend_schema(summary="Workflow definitions"),
    retrieve=extend_schema(summary="One definition with its tasks"),
    create=extend_schema(
        request=WorkflowInputSerializer,
        responses={201: WorkflowSerializer},
        summary="Create a definition (400 names each task and problem)",
    ),
    update=extend_schema(
        request=WorkflowInputSerializer,
        responses=WorkflowSerializer,
        summary="Replace a definition (running executions keep their copy)",
    ),
    destroy=extend_schema(summary="Delete a definition (its executions stay)"),
)
class WorkflowViewSet(NamedNotFoundMixin, viewsets.ModelViewSet):
    permission_classes = [IsStaffOrReadOnlyUser]
    filterset_class = WorkflowFilter
    ordering_fields = ["name", "created_at", "updated_at"]
    not_found_noun = "workflow"
    http_method_names = ["get", "post", "put", "delete", "head", "options"]

    def get_queryset(self):
        qs = Workflow.objects.annotate(executions_count=Count("executions", distinct=True)).order_by("name")
        if self.action == "list":
            qs = qs.annotate(tasks_count=Count("tasks", distinct=True))
        return qs

    def get_serializer_class(self):
        return WorkflowListSerializer if self.action == "list" else WorkflowSerializer

    def _show(self, workflow: Workflow, status_code: int = 200) -> Response:
        return Response(WorkflowSerializer(self.get_queryset().get(pk=workflow.pk)).data, status=status_code)

    def create(self, request: Request) -> Response:
        workflow = services.create_workflow(_body(request), created_by=requester(request))
        return self._show(workflow, status.HTTP_201_CREATED)

    def update(self, request: Request, pk: str) -> Response:
        workflow = self.get_object()
        return self._show(services.update_workflow(workflow.pk, _body(request)))

    def destroy(self, request: Request, pk: str) -> Response:
        services.delete_workflow(self.get_object().pk)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=ExecuteSerializer,
        responses={201: ExecutionDetailSerializer},
        summary="Start an execution (optional starting context)",
    )
    @action(detail=True, methods=["post"])
    def execute(self, request: Request, pk: str) -> Response:
        workflow = self.get_object()
        body = _body(request)
        unknown = sorted(set(body) - {"context"})
        if unknown:
            raise InvalidInput(
                {"non_field_errors": [f"unknown field(s): {', '.join(unknown)}; send {{'context': {{...}}}}"]}
            )
        execution = services.execute(workflow.pk, context=body.get("context"), requested_by=requester(request))
        return Response(ExecutionDetailSerializer(execution).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    list=extend_schema(
        summary="Executions (filters: workflow, status, since)",
        parameters=[OpenApiParameter("workflow", {"type": "integer", "minimum": 1, "maximum": 2**63 - 1})],
    ),
    retrieve=extend_schema(summary="One execution: progress, each task, context, summary"),
)
class ExecutionViewSet(NamedNotFoundMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    permission_classes = [IsStaffOrReadOnlyUser]
    filterset_class = ExecutionFilter
    ordering_fields = ["created_at", "finished_at", "status"]
    not_found_noun = "execution"

    def get_queryset(self):
        qs = Execution.objects.all()
        owner = owner_scope(self.request)  # staff: all; other people: the executions they started
        return qs if owner is None else qs.filter(requested_by=owner)

    def get_serializer_class(self):
        return ExecutionSerializer if self.action == "list" else ExecutionDetailSerializer

    def _show(self, execution: Execution) -> Response:
        return Response(ExecutionDetailSerializer(Execution.objects.get(pk=execution.pk)).data)

    @extend_schema(request=None, responses=ExecutionDetailSerializer, summary="Cancel (409 if finished)")
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        return self._show(services.cancel_execution(self.get_object().pk))

    @extend_schema(request=None, responses=ExecutionDetailSerializer, summary="Pause: start nothing new")
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, pk: str) -> Response:
        return self._show(services.pause_execution(self.get_object().pk))

    @extend_schema(request=None, responses=ExecutionDetailSerializer, summary="Resume a paused execution")
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str) -> Response:
        return self._show(services.resume_execution(self.get_object().pk))
