"""The Kafka ACLs docs/security.md documents, read from the doc and created on the secure broker.

docs/security.md is the one source of truth: its `kafka-acls.sh` commands (section "Kafka ACLs")
are parsed here into bindings, the secure stack creates exactly those at start, and the secured
pipeline test runs the agent and collector as the documented principals. A doc that grants too
little fails that test; one that no longer parses fails the stack's start.
"""

from __future__ import annotations

import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.stack.health import StackError

SECURITY_DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"

# Kafka's wire codes (org.apache.kafka.common.resource.ResourceType, acl.AclOperation, ...).
RESOURCE_TYPES = {"topic": 2, "group": 3, "cluster": 4}
OPERATIONS = {
    "All": 2,
    "Read": 3,
    "Write": 4,
    "Create": 5,
    "Delete": 6,
    "Alter": 7,
    "Describe": 8,
    "ClusterAction": 9,
    "DescribeConfigs": 10,
    "AlterConfigs": 11,
    "IdempotentWrite": 12,
}
PATTERN_LITERAL = 3
PERMISSION_ALLOW = 3
CLUSTER_RESOURCE_NAME = "kafka-cluster"


@dataclass(frozen=True, order=True)
class AclBinding:
    """Allow `principal` (`User:name`) `operation` on one literal resource, from any host."""

    principal: str
    resource_type: str  # topic, group or cluster
    resource_name: str
    operation: str

    @property
    def username(self) -> str:
        return self.principal.removeprefix("User:")

    def wire(self) -> tuple[Any, ...]:
        """The fields of one CreateAcls (v1) creation."""
        return (
            RESOURCE_TYPES[self.resource_type],
            self.resource_name,
            PATTERN_LITERAL,
            self.principal,
            "*",
            OPERATIONS[self.operation],
            PERMISSION_ALLOW,
        )


def documented_acls(doc: str | None = None) -> list[AclBinding]:
    """Every binding the `kafka-acls.sh ... --add` commands of docs/security.md grant."""
    text = SECURITY_DOC.read_text() if doc is None else doc
    section = re.search(r"^### Kafka ACLs\n(.*?)^#{2,3} ", text, re.DOTALL | re.MULTILINE)
    block = re.search(r"```sh\n(.*?)\n```", section.group(1), re.DOTALL) if section else None
    if block is None:
        raise StackError(f"{SECURITY_DOC}: no ```sh block under '### Kafka ACLs'")
    commands = block.group(1).replace("\\\n", " ")
    bindings: list[AclBinding] = []
    for line in commands.splitlines():
        line = line.strip()
        if line.startswith("kafka-acls.sh"):
            bindings += _parse_command(shlex.split(line, comments=True))
    if not bindings:
        raise StackError(f"{SECURITY_DOC}: no `kafka-acls.sh --add` command under '### Kafka ACLs'")
    return sorted(set(bindings))


_VALUE_FLAGS = ("--allow-principal", "--operation", "--topic", "--group", "--bootstrap-server")


def _parse_command(words: list[str]) -> list[AclBinding]:
    if "--add" not in words:
        return []
    values: dict[str, list[str]] = {flag: [] for flag in _VALUE_FLAGS}
    for flag, value in itertools.pairwise(words):
        if flag in values:
            values[flag].append(value)
    principals, operations = values["--allow-principal"], values["--operation"]
    resources = [("topic", name) for name in values["--topic"]]
    resources += [("group", name) for name in values["--group"]]
    if "--cluster" in words:
        resources.append(("cluster", CLUSTER_RESOURCE_NAME))
    unknown = [operation for operation in operations if operation not in OPERATIONS]
    if unknown or not (principals and operations and resources):
        raise StackError(f"{SECURITY_DOC}: cannot read the kafka-acls.sh command {' '.join(words)!r}")
    return [
        AclBinding(principal, resource_type, name, operation)
        for principal in principals
        for resource_type, name in resources
        for operation in operations
    ]


def users_of(bindings: list[AclBinding]) -> list[str]:
    """The user names the bindings grant to, in order of first appearance."""
    return list(dict.fromkeys(binding.username for binding in bindings))


async def create_acls(bootstrap: str, bindings: list[AclBinding], **client_options: Any) -> None:
    """Create `bindings` as a super user (client_options); existing ones stay as they are."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import for_code
    from aiokafka.protocol.admin import CreateAclsRequest

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **client_options)
    await client.bootstrap()
    try:
        node = client.get_random_node()
        for binding in bindings:
            response = await client.send(node, CreateAclsRequest(*binding.wire()))
            for code, message in response.creation_responses:
                if code:
                    raise StackError(
                        f"creating the Kafka ACL {binding}: {for_code(code).__name__} {message or ''}"
                    )
    finally:
        await client.close()
