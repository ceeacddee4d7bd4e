"""`tether stack up --cluster` with plain clients: three brokers and two Elasticsearch nodes that
replicate what they hold, so a record or a document outlives kill -9 of the server holding it.

These check the cluster itself, what the fault suite of issue 15 stands on: the metadata, the
topics' replication, the shard copies, and one crash and return of a partition leader and of a
node, with the clients every user has (aiokafka, urllib).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tether.stack import ClusterStack
from tether.stack.cluster_kafka import registered_brokers

pytestmark = pytest.mark.stack


def es_request(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    """One Elasticsearch call: (status, parsed JSON body); connection errors raise OSError."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return int(error.code), json.loads(error.read() or b"null")


async def topic_min_insync_replicas(bootstrap: str, topic: str) -> str:
    """The topic's min.insync.replicas, once the broker asked knows the topic (a topic just made
    reaches each broker's metadata a moment later)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        deadline = time.monotonic() + 15
        while True:
            (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            ((error, message, _type, _name, entries),) = response.resources
            values = [str(value) for name, value, *_ in entries if name == "min.insync.replicas"]
            if error == 0 and values:
                return values[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no configs of {topic}: error {error} {message}")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


def es_bulk(url: str, ndjson: str) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=ndjson.encode(), method="POST", headers={"Content-Type": "application/x-ndjson"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


async def wait_for(what: str, check: Any, seconds: float) -> Any:
    """Poll the async `check` until it returns something truthy; fail naming `what` and the last value."""
    deadline, last = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} not reached in {seconds:.0f}s (last: {last})")


# The cluster as started


async def test_three_brokers_replicated_topics_and_a_green_two_node_cluster(
    cluster_stack: ClusterStack,
) -> None:
    assert await registered_brokers(cluster_stack.kafka.bootstrap) == {1, 2, 3}

    admin = AIOKafkaAdminClient(bootstrap_servers=cluster_stack.kafka.bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        described = await admin.describe_topics(list(cluster_stack.config.topics))
    finally:
        await admin.close()
    assert sorted(t["topic"] for t in described) == sorted(cluster_stack.config.topics)
    for topic in described:
        assert len(topic["partitions"]) == cluster_stack.config.partitions
        for partition in topic["partitions"]:
            assert sorted(partition["replicas"]) == [1, 2, 3], (topic["topic"], partition)
            assert sorted(partition["isr"]) == [1, 2, 3], (topic["topic"], partition)
        assert await topic_min_insync_replicas(cluster_stack.kafka.bootstrap, topic["topic"]) == "2"

    status, health = es_request(
        f"{cluster_stack.elasticsearch.url}/_cluster/health?wait_for_status=green&timeout=30s"
    )
    assert status == 200 and health["status"] == "green", health
    assert health["number_of_nodes"] == health["number_of_data_nodes"] == 2, health

    # An index made with no settings gets one replica per shard, on the other node.
    index = f"cluster-e2e-{uuid.uuid4().hex[:10]}"
    assert es_request(f"{cluster_stack.elasticsearch.url}/{index}", "PUT", {})[0] == 200
    try:
        status, health = es_request(
            f"{cluster_stack.elasticsearch.url}/_cluster/health/{index}?wait_for_status=green&timeout=30s"
        )
        assert status == 200 and health["status"] == "green", health
        _, shards = es_request(f"{cluster_stack.elasticsearch.url}/_cat/shards/{index}?format=json")
        assert sorted(s["prirep"] for s in shards) == ["p", "r"], shards
        assert all(s["state"] == "STARTED" for s in shards), shards
        assert len({s["node"] for s in shards}) == 2, shards
    finally:
        es_request(f"{cluster_stack.elasticsearch.url}/{index}", "DELETE")


# Kafka: kill -9 of a partition's leader


async def test_acks_all_record_outlives_kill_of_its_partition_leader(cluster_stack: ClusterStack) -> None:
    topic = f"cluster-e2e-{uuid.uuid4().hex[:10]}"
    await cluster_stack.create_topics([topic], partitions=1)
    assert await topic_min_insync_replicas(cluster_stack.kafka.bootstrap, topic) == "2"
    before = f"before the kill {uuid.uuid4()}".encode()
    after = f"after the kill {uuid.uuid4()}".encode()

    producer = AIOKafkaProducer(bootstrap_servers=cluster_stack.kafka.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, before)
        partition = await cluster_stack.describe_partition(topic)
        assert sorted(partition["isr"]) == [1, 2, 3], partition
        leader = cluster_stack.broker(partition["leader"])

        killed_at = time.monotonic()
        await asyncio.to_thread(cluster_stack.kill_hard, leader)
        # Two in-sync replicas remain, as many as min.insync.replicas asks: acks=all still succeeds.
        await producer.send_and_wait(topic, after)
        failover = time.monotonic() - killed_at
    finally:
        await producer.stop()

    partition = await cluster_stack.describe_partition(topic)
    assert partition["leader"] != leader.node_id, partition
    assert leader.node_id not in partition["isr"] and len(partition["isr"]) == 2, partition

    consumer = AIOKafkaConsumer(bootstrap_servers=cluster_stack.kafka.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning(TopicPartition(topic, 0))
        records = await consumer.getmany(timeout_ms=10000, max_records=10)
        values = [r.value for batch in records.values() for r in batch]
    finally:
        await consumer.stop()
    assert values == [before, after]

    restarted_at = time.monotonic()
    await asyncio.to_thread(cluster_stack.restart, leader)

    async def back_in_sync() -> bool:
        return leader.node_id in (await cluster_stack.describe_partition(topic))["isr"]

    await wait_for(f"broker {leader.node_id} back in the ISR of {topic}", back_in_sync, seconds=90)
    assert await registered_brokers(cluster_stack.kafka.bootstrap) == {1, 2, 3}
    print(
        f"leader {leader.node_id} killed: acks=all write accepted after {failover:.1f}s; "
        f"restarted and back in the ISR after {time.monotonic() - restarted_at:.1f}s"
    )


# Elasticsearch: kill -9 of a node


async def test_documents_outlive_kill_of_a_node_and_the_node_rejoins(cluster_stack: ClusterStack) -> None:
    url = cluster_stack.elasticsearch.url  # node 1, the master, stays up
    victim = next(node for node in cluster_stack.elasticsearch_nodes if not node.is_master)
    index = f"cluster-e2e-{uuid.uuid4().hex[:10]}"
    ids = [uuid.uuid4().hex for _ in range(20)]
    status, _ = es_request(f"{url}/{index}", "PUT", {"settings": {"number_of_shards": 4}})
    assert status == 200
    try:
        es_request(f"{url}/_cluster/health/{index}?wait_for_status=green&timeout=30s")
        bulk = "".join(json.dumps({"index": {"_id": i}}) + "\n" + json.dumps({"n": i}) + "\n" for i in ids)
        assert not es_bulk(f"{url}/{index}/_bulk?refresh=true", bulk)["errors"]
        _, shards = es_request(f"{url}/_cat/shards/{index}?format=json")
        primaries_on_victim = sum(1 for s in shards if s["prirep"] == "p" and s["node"] == victim.node_name)

        await asyncio.to_thread(cluster_stack.kill_hard, victim)

        async def every_document_found() -> bool:
            found = [es_request(f"{url}/{index}/_doc/{i}")[1].get("found") for i in ids]
            return all(found)

        await wait_for("every document found on the surviving node", every_document_found, seconds=30)
        status, count = es_request(f"{url}/{index}/_count")
        assert status == 200 and count["count"] == len(ids), count
        # Writes go on with the node down: its primaries were promoted on the survivor.
        status, _ = es_request(f"{url}/{index}/_doc/while-down?refresh=true", "PUT", {"n": "while-down"})
        assert status == 201
        _, health = es_request(f"{url}/_cluster/health")
        assert health["number_of_nodes"] == 1 and health["status"] == "yellow", health

        restarted_at = time.monotonic()
        await asyncio.to_thread(cluster_stack.restart, victim)
        await asyncio.to_thread(cluster_stack.wait_elasticsearch_green, 120.0)
        _, shards = es_request(f"{url}/_cat/shards/{index}?format=json")
        assert all(s["state"] == "STARTED" for s in shards), shards
        assert {s["node"] for s in shards} == {n.node_name for n in cluster_stack.elasticsearch_nodes}
        status, count = es_request(f"{victim.url}/{index}/_count")  # asked of the node that came back
        assert status == 200 and count["count"] == len(ids) + 1, count
        print(
            f"{victim.node_name} killed holding {primaries_on_victim} of 4 primaries; back and green "
            f"after {time.monotonic() - restarted_at:.1f}s"
        )
    finally:
        es_request(f"{url}/{index}", "DELETE")
