# Run by tests/fuzz/run.py as `manage.py shell -c` on the fresh fuzz database: a staff user, a registered
# agent, a capability that a past invocation references, a workflow with an execution, a message to the
# agent (a delivery), its subscription and a routing rule. Prints the tokens.
import json

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from agents import services as agent_services
from agents.services import CapabilitySpec
from messaging import services as bus
from messaging.models import RoutingRule
from workflows import services as workflow_services

staff = get_user_model().objects.create_user("fuzz-staff", password="fuzz-staff-password", is_staff=True)
ANY = {"type": "object"}
agent_services.create_capability(name="fuzz-echo", input_schema=ANY, output_schema=ANY)
registration = agent_services.register_agent(
    agent_id="fuzz-agent", name="fuzz agent", capabilities=[CapabilitySpec(name="fuzz-echo")], max_concurrency=2
)
agent_services.invoke(capability="fuzz-echo", input={"a": 1}, requested_by="user:fuzz-staff")
workflow = workflow_services.create_workflow(
    {"name": "fuzz-workflow", "tasks": [{"key": "first", "capability": "fuzz-echo"}]}, created_by="user:fuzz-staff"
)
workflow_services.execute(workflow.pk, context={}, requested_by="user:fuzz-staff")
bus.subscribe(registration.agent, "fuzz.#")
bus.send(bus.Sender.of_user("fuzz-staff"), {"type": "note"}, to="fuzz-agent")
RoutingRule.objects.create(name="fuzz-rule", action="drop", topic_pattern="fuzz.dropped.#")
print(json.dumps({"staff": Token.objects.create(user=staff).key, "agent": registration.token}))
