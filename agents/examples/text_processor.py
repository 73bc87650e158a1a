"""The seed's text processor: ``process_text`` counts words, scores sentiment and finds key topics."""

from __future__ import annotations

import re
from collections import Counter

from agents.examples._common import processor_schemas, rng, simulate_work
from agents.sdk import AgentDefinition

agent = AgentDefinition(
    "text_agent",
    name="TextAgent",
    description="Processes text tasks",
    tags=("text", "processor"),
    metadata={"specialization": "text"},
)
INPUT, OUTPUT = processor_schemas("document_count", "documents", {"type": "string"})
POSITIVE = {"good", "great", "efficient", "fast", "reliable", "improved", "success", "automation"}
NEGATIVE = {"bad", "slow", "broken", "failure", "error", "lost", "late"}
STOP = {"the", "a", "an", "and", "or", "of", "to", "in", "is", "it", "for", "on", "with", "are", "was"}
VOCABULARY = sorted(POSITIVE | NEGATIVE | {"ai", "agents", "data", "workflow", "queue", "platform", "report"})


@agent.capability(
    "process_text", description="Analyse text documents", input_schema=INPUT, output_schema=OUTPUT, cost=1.5
)
def process_text(data, ctx):
    task = data["task_data"]
    documents = task.get("documents")
    if documents is None:
        r = rng(task.get("id"), task.get("document_count", 50))
        documents = [" ".join(r.choice(VOCABULARY) for _ in range(12)) for _ in range(task.get("document_count", 50))]
    words = [w for doc in documents for w in re.findall(r"[a-z']+", doc.lower()) if w not in STOP]
    pos, neg = sum(w in POSITIVE for w in words), sum(w in NEGATIVE for w in words)
    seconds = simulate_work(ctx)
    return {
        "task_id": task.get("id"),
        "result": {
            "documents_analyzed": len(documents),
            "words": len(words),
            "sentiment_score": round((pos - neg) / (pos + neg), 4) if pos + neg else 0.0,
            "key_topics": [w for w, _ in Counter(words).most_common(3)],
        },
        "processing_time": seconds,
        "agent_id": ctx.agent_id,
    }
