# Run by tests/fuzz/run.py as `manage.py shell -c` on the fresh fuzz database: a staff user, a registered
# agent, a capability that a past invocation references, a workflow with an execution. Prints the tokens.
import json

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from agents import services as agent_services
from agents.services import CapabilitySpec
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
print(json.dumps({"staff": Token.objects.create(user=staff).key, "agent": registration.token}))
