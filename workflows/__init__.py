"""Workflow definitions, executions and the event-driven scheduler (to come: issue 6)."""
