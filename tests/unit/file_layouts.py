"""The two layouts of file records in Kafka, converted into each other for the collector's tests.

The agent writes the path and the fingerprint once per scope and only the byte offset per record;
older agents wrote `log.record.uid` and `log.file.path` in every record, and such records may still
sit in Kafka. The collector must index both to the same documents, so its tests feed it each
record in both layouts.
"""

from __future__ import annotations

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tether.schemas.records import (
    ATTR_AGENT_ID,
    ATTR_FILE_FINGERPRINT,
    ATTR_FILE_PATH,
    ATTR_RECORD_ID,
    ATTR_RECORD_OFFSET,
    FILE_SCOPE,
    record_id,
)


def _string(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _agent_id(resource_attributes: object) -> str:
    ids = [kv.value.string_value for kv in resource_attributes if kv.key == ATTR_AGENT_ID]  # type: ignore[attr-defined]
    return ids[-1] if ids else ""


def old_layout(request: ExportLogsServiceRequest) -> ExportLogsServiceRequest:
    """`request` (file records as the agent writes them) as an agent before offsets wrote it: the
    record id and the path first in each record's attributes, a scope with its name only."""
    out = ExportLogsServiceRequest()
    out.CopyFrom(request)
    for resource_logs in out.resource_logs:
        agent_id = _agent_id(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            assert scope_logs.scope.name == FILE_SCOPE
            scope = {kv.key: kv.value.string_value for kv in scope_logs.scope.attributes}
            assert set(scope) == {ATTR_FILE_PATH, ATTR_FILE_FINGERPRINT}, scope
            del scope_logs.scope.attributes[:]
            for record in scope_logs.log_records:
                first = record.attributes[0]
                assert first.key == ATTR_RECORD_OFFSET and first.value.HasField("int_value")
                uid = record_id(agent_id, scope[ATTR_FILE_FINGERPRINT], first.value.int_value)
                rest = list(record.attributes[1:])
                del record.attributes[:]
                record.attributes.extend(
                    [_string(ATTR_RECORD_ID, uid), _string(ATTR_FILE_PATH, scope[ATTR_FILE_PATH]), *rest]
                )
    return out


def new_layout(
    request: ExportLogsServiceRequest, fingerprint: str = "fp"
) -> tuple[ExportLogsServiceRequest, int]:
    """`request` with each file record whose one `log.record.uid` is `<agent id>:<fingerprint>:<offset>`
    in the agent's layout (its offset in place of the uid, the fingerprint on the scope), and the
    path moved to the scope where every record of the scope has the same one; and how many
    records were converted. Other records stay as they are, as a mixed request may have them."""
    out = ExportLogsServiceRequest()
    out.CopyFrom(request)
    converted = 0
    for resource_logs in out.resource_logs:
        prefix = f"{_agent_id(resource_logs.resource.attributes)}:{fingerprint}:"
        for scope_logs in resource_logs.scope_logs:
            if scope_logs.scope.name != FILE_SCOPE:
                continue
            here = 0
            for record in scope_logs.log_records:
                uids = [i for i, kv in enumerate(record.attributes) if kv.key == ATTR_RECORD_ID]
                if len(uids) != 1:
                    continue
                uid = record.attributes[uids[0]].value
                if uid.WhichOneof("value") != "string_value" or not uid.string_value.startswith(prefix):
                    continue
                digits = uid.string_value[len(prefix) :]
                if not digits.isascii() or not digits.isdigit() or str(int(digits)) != digits:
                    continue  # "07" or "1e3": no offset writes it
                offset = KeyValue(key=ATTR_RECORD_OFFSET, value=AnyValue(int_value=int(digits)))
                record.attributes[uids[0]].CopyFrom(offset)
                here += 1
            if not here:
                continue
            converted += here
            scope_logs.scope.attributes.append(_string(ATTR_FILE_FINGERPRINT, fingerprint))
            paths = [[kv for kv in r.attributes if kv.key == ATTR_FILE_PATH] for r in scope_logs.log_records]
            if all(len(p) == 1 and p[0] == paths[0][0] for p in paths):
                scope_logs.scope.attributes.append(paths[0][0])
                for record in scope_logs.log_records:
                    kept = [kv for kv in record.attributes if kv.key != ATTR_FILE_PATH]
                    del record.attributes[:]
                    record.attributes.extend(kept)
    return out, converted
