"""The seed's workflows as definitions for POST /api/workflows/ (used by the demo and the tests)."""

from __future__ import annotations

from typing import Any


def seed_complex_workflow(name: str = "Complex Data Processing Workflow") -> dict[str, Any]:
    """Exercise 1: ingestion and image processing in parallel, text analysis after ingestion,
    and a final aggregation after all three that reads their outputs."""
    return {
        "name": name,
        "description": "Multi-step data processing with different specializations (the seed's Exercise 1)",
        "max_parallel_tasks": 10,
        "failure_strategy": "stop",
        "metadata": {"created_by": "system", "priority": "high"},
        "tasks": [
            {
                "key": "data_ingestion",
                "name": "Data Ingestion",
                "description": "Ingest and validate raw data",
                "capability": "process_data",
                "input": {"task_data": {"id": "data_001", "record_count": 1000}, "priority": 1},
                "timeout": 30,
                "priority": 1,
            },
            {
                "key": "image_processing",
                "name": "Image Processing",
                "description": "Process and analyze images",
                "capability": "process_image",
                "input": {"task_data": {"id": "img_001", "image_count": 50}, "priority": 2},
                "timeout": 45,
                "priority": 2,
            },
            {
                "key": "text_analysis",
                "name": "Text Analysis",
                "description": "Analyze text documents (after the data is in)",
                "capability": "process_text",
                "input": {"task_data": {"id": "text_001", "document_count": 200}, "priority": 1},
                "depends_on": ["data_ingestion"],
                "condition": "tasks.data_ingestion.output.result.data_quality_score >= 0.5",
                "timeout": 25,
                "priority": 1,
            },
            {
                "key": "final_aggregation",
                "name": "Final Aggregation",
                "description": "Aggregate all processing results",
                "capability": "process_data",
                "input": {
                    "task_data": {
                        "id": "agg_001",
                        "sources": {
                            "data": "${tasks.data_ingestion.output.result.processed_records}",
                            "image": "${tasks.image_processing.output.result.images_processed}",
                            "text": "${tasks.text_analysis.output.result.documents_analyzed}",
                        },
                        "records": [
                            "${tasks.data_ingestion.output.result.mean}",
                            "${tasks.image_processing.output.result.images_processed}",
                            "${tasks.text_analysis.output.result.words}",
                        ],
                    },
                    "priority": 3,
                },
                "depends_on": ["data_ingestion", "image_processing", "text_analysis"],
                "timeout": 20,
                "priority": 3,
            },
        ],
    }


def distributed_coordination_workflow(name: str = "Distributed Coordination", agents: int = 3) -> dict[str, Any]:
    """Exercise 3: each step needs ``agents`` distinct workers; their outputs are aggregated."""
    return {
        "name": name,
        "description": "The seed's Exercise 3: tasks that need several workers, with aggregated results",
        "failure_strategy": "stop",
        "tasks": [
            {
                "key": "distributed_computation",
                "name": "Distributed computation",
                "capability": "computation",
                "input": {"data_size": 1000, "task_name": "distributed_computation"},
                "required_agents": agents,
                "aggregation": "average",
                "timeout": 60,
            },
            {
                "key": "shares_list",
                "name": "Every worker's answer",
                "capability": "computation",
                "input": {"data_size": 50, "task_name": "shares_list"},
                "required_agents": agents,
                "aggregation": "list",
                "depends_on": ["distributed_computation"],
                "timeout": 60,
            },
        ],
    }
