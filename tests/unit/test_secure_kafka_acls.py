"""The Kafka ACLs of docs/security.md, as the secure stack reads them from the doc."""

from __future__ import annotations

import pytest

from tether.stack.health import StackError
from tether.stack.secure_kafka_acls import AclBinding, documented_acls, users_of

DOC = """
### Kafka ACLs

```sh
# agent
kafka-acls.sh --bootstrap-server $BROKER --command-config admin.properties --add \\
  --allow-principal User:a --operation Write --operation Describe \\
  --topic t1 --topic t2
kafka-acls.sh --bootstrap-server $BROKER --add --allow-principal User:c --operation Read --group g  # why
kafka-acls.sh --bootstrap-server $BROKER --list --topic t1
```

### Jaeger
"""


def test_every_add_command_becomes_its_bindings() -> None:
    assert documented_acls(DOC) == sorted(
        [
            AclBinding("User:a", "topic", "t1", "Write"),
            AclBinding("User:a", "topic", "t1", "Describe"),
            AclBinding("User:a", "topic", "t2", "Write"),
            AclBinding("User:a", "topic", "t2", "Describe"),
            AclBinding("User:c", "group", "g", "Read"),
        ]
    )


def test_the_real_doc_grants_the_agent_and_collector_no_more_than_they_need() -> None:
    bindings = documented_acls()
    assert users_of(bindings) == ["tether-agent", "tether-collector"]
    by_user = {
        u: {(b.resource_type, b.operation) for b in bindings if b.username == u} for u in users_of(bindings)
    }
    assert by_user["tether-agent"] == {("topic", "Write"), ("topic", "Describe")}
    assert by_user["tether-collector"] == {
        ("topic", "Read"),
        ("topic", "Describe"),
        ("group", "Read"),
        ("group", "Describe"),
    }


@pytest.mark.parametrize(
    "command",
    [
        "kafka-acls.sh --add --allow-principal User:a --operation Fly --topic t",
        "kafka-acls.sh --add --allow-principal User:a --operation Read",
    ],
)
def test_a_command_it_cannot_read_stops_the_stack(command: str) -> None:
    with pytest.raises(StackError, match=r"kafka-acls\.sh"):
        documented_acls(f"### Kafka ACLs\n\n```sh\n{command}\n```\n\n### Jaeger\n")


def test_wire_fields_are_kafkas_codes() -> None:
    # CreateAcls v1: topic 2, LITERAL 3, any host, DESCRIBE 8, ALLOW 3
    assert AclBinding("User:a", "topic", "t", "Describe").wire() == (2, "t", 3, "User:a", "*", 8, 3)
