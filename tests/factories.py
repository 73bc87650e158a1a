"""Test data. Agents made here have the token ``token_for(agent_id)``."""

from __future__ import annotations

from datetime import timedelta

import factory
from django.utils import timezone

from agents.models import Agent, AgentCapability, AgentState, Capability
from agents.services import hash_token


def token_for(agent_id: str) -> str:
    return f"test-token-{agent_id}"


class CapabilityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Capability
        django_get_or_create = ["name"]

    name = factory.Sequence(lambda n: f"cap_{n}")
    description = factory.LazyAttribute(lambda o: f"does {o.name}")
    input_schema = factory.LazyFunction(lambda: {"type": "object"})
    output_schema = factory.LazyFunction(lambda: {"type": "object"})


class AgentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Agent
        django_get_or_create = ["agent_id"]
        skip_postgeneration_save = True

    agent_id = factory.Sequence(lambda n: f"agent-{n}")
    name = factory.LazyAttribute(lambda o: o.agent_id.replace("-", " ").title())
    state = AgentState.IDLE
    registered_at = factory.LazyFunction(timezone.now)
    last_heartbeat_at = factory.LazyFunction(timezone.now)
    state_changed_at = factory.LazyFunction(timezone.now)
    token_hash = factory.LazyAttribute(lambda o: hash_token(token_for(o.agent_id)))

    class Params:
        stale = factory.Trait(last_heartbeat_at=factory.LazyFunction(lambda: timezone.now() - timedelta(hours=1)))

    @factory.post_generation
    def offers(self, create, extracted, **kwargs):
        """offers={"cap_name": cost, ...}"""
        if create and extracted:
            for name, cost in extracted.items():
                AgentCapability.objects.create(agent=self, capability=CapabilityFactory(name=name), cost=cost)

    @factory.post_generation
    def tag_names(self, create, extracted, **kwargs):
        if create and extracted:
            from agents.services import tags_named

            self.tags.set(tags_named(extracted))
