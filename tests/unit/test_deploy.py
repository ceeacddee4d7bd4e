"""deploy/: compose, Kubernetes, systemd and Docker files checked without Docker or a cluster.

Configs embedded or mounted anywhere are loaded by the real loaders (and `tether ... validate`), and
every port, probe, scrape target and mount is checked against what those configs say.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import BaseModel

from tether.agent.config import AgentConfig
from tether.collector.config import CollectorConfig
from tether.config import ConfigError, parse_config, substitute_env
from tether.stack import Stack

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
K8S_DIR = DEPLOY / "kubernetes"
SYSTEMD_DIR = DEPLOY / "systemd"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
TETHER = Path(sys.executable).with_name("tether")
KUBERNETES_VERSION = "1.30"  # the oldest Kubernetes these manifests are meant for
NODE_NAME = "node-1"  # stands in for fieldRef spec.nodeName

M = TypeVar("M", bound=BaseModel)


def _port(endpoint: str) -> int:
    return int(endpoint.rpartition(":")[2])


def _host(endpoint: str) -> str:
    return endpoint.rpartition(":")[0]


def load_config_text(text: str, model: type[M], env: Mapping[str, str], source: str) -> M:
    """What `tether agent|collector --config` does with the file: env substitution, then the model."""
    return parse_config(substitute_env(text, env, source), model, source)


def validate_cli(
    kind: str, text: str, env: Mapping[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    return subprocess.run(
        [str(TETHER), kind, "validate", "--config", str(path)],
        env={"PATH": os.environ.get("PATH", ""), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- every YAML file ------------------------------------------------------------------------------------


YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    documents = list(yaml.safe_load_all(path.read_text()))
    assert documents and all(isinstance(d, dict) for d in documents), path


def test_the_yaml_files_include_ours() -> None:
    names = {str(p.relative_to(DEPLOY)) for p in YAML_FILES}
    assert {"compose/compose.yaml", "kubernetes/agent-daemonset.yaml", "systemd/agent.yaml"} <= names


# --- compose ----------------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    return document


def services() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose()["services"]
    return result


def _depends(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on", {})
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends.items()}


def _one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart") == "no"


def _bind_mounts(service: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """(host path, container path) of the service's bind mounts (named volumes excluded)."""
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            yield (COMPOSE_DIR / source).resolve(), target


def _config_arg(command: list[str]) -> str:
    return command[command.index("--config") + 1]


def compose_config(name: str, model: type[M]) -> tuple[M, str, dict[str, str]]:
    """The config the service runs with: the file mounted where its --config points, its environment."""
    service = services()[name]
    target = _config_arg(service["command"])
    (source,) = [host for host, container in _bind_mounts(service) if container == target]
    env = {k: str(v) for k, v in service.get("environment", {}).items()}
    text = source.read_text()
    return load_config_text(text, model, env, str(source)), text, env


def test_compose_services_are_healthchecked_or_one_shot() -> None:
    for name, service in services().items():
        if _one_shot(service):
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"


def test_compose_depends_on_existing_services_with_conditions_they_can_meet() -> None:
    all_services = services()
    for name, service in all_services.items():
        for dependency, condition in _depends(service).items():
            assert dependency in all_services, f"{name} depends on unknown {dependency}"
            target = all_services[dependency]
            if condition == "service_healthy":
                assert "healthcheck" in target, (
                    f"{name} waits for {dependency} to be healthy: it has no check"
                )
            elif condition == "service_completed_successfully":
                assert _one_shot(target), f"{name} waits for {dependency} to finish: it is not one-shot"
            else:
                pytest.fail(f"{name} -> {dependency}: use a health or completion condition, not {condition}")
    # no cycles: compose would refuse to start
    seen: dict[str, bool] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"dependency cycle {' -> '.join((*path, name))}"
        if name not in seen:
            for dependency in _depends(all_services[name]):
                visit(dependency, (*path, name))
            seen[name] = True

    for name in all_services:
        visit(name, ())


def test_compose_bind_mounts_and_build_context_exist() -> None:
    for name, service in services().items():
        for host, _ in _bind_mounts(service):
            assert host.exists(), f"{name} mounts {host}, which does not exist"
        if "build" in service:
            context = (COMPOSE_DIR / service["build"]["context"]).resolve()
            assert context == REPO
            assert (context / service["build"]["dockerfile"]).resolve() == DOCKERFILE


def test_compose_agent_ports_health_and_paths_follow_its_config() -> None:
    config, _, env = compose_config("agent", AgentConfig)
    service = services()["agent"]
    assert config.otlp is not None and config.otlp.grpc_endpoint and config.otlp.http_endpoint
    wanted = {_port(config.otlp.grpc_endpoint), _port(config.otlp.http_endpoint), _port(config.ops.endpoint)}
    published = {}
    for mapping in service["ports"]:
        host, container = str(mapping).split(":")
        published[int(container)] = int(host)
    assert set(published) == wanted and all(h == c for c, h in published.items()), published
    # Listening on 127.0.0.1 inside a container is unreachable from the published port.
    for endpoint in (config.otlp.grpc_endpoint, config.otlp.http_endpoint, config.ops.endpoint):
        assert _host(endpoint) == "0.0.0.0", endpoint
    _check_health(service, env, _port(config.ops.endpoint))
    # The files it tails and the state it keeps are on volumes.
    mounts = [v.split(":")[1] for v in service["volumes"]]
    assert config.files is not None
    for pattern in config.files.include:
        assert any(pattern.startswith(m + "/") for m in mounts), pattern
    assert any(str(config.data_dir).startswith(m) for m in mounts if not m.startswith("/etc")), (
        config.data_dir
    )
    grace = _seconds(service["stop_grace_period"])
    assert grace > 2 * config.shutdown_grace_seconds


def test_compose_collector_ports_health_and_peers_follow_its_config() -> None:
    config, _, env = compose_config("collector", CollectorConfig)
    all_services = services()
    service = all_services["collector"]
    ops = _port(config.ops.endpoint)
    assert _host(config.ops.endpoint) == "0.0.0.0"
    assert [int(p) for p in service["expose"]] == [ops]
    assert "ports" not in service  # scaling out would clash on a host port
    _check_health(service, env, ops)
    # It talks to the services by their compose names and ports.
    es = urlsplit(config.elasticsearch.url)
    assert es.hostname in all_services and es.port == 9200
    jaeger_host, jaeger_port = _host(config.jaeger.endpoint), _port(config.jaeger.endpoint)
    assert jaeger_host == "jaeger"
    jaeger = yaml.safe_load((COMPOSE_DIR / "jaeger.yaml").read_text())
    assert _port(jaeger["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]) == jaeger_port


def test_compose_kafka_topics_and_listeners_match_both_configs() -> None:
    agent, _, _ = compose_config("agent", AgentConfig)
    collector, _, _ = compose_config("collector", CollectorConfig)
    kafka = services()["kafka"]["environment"]
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"].split("://", 1)[1]
    assert agent.kafka.bootstrap_servers == collector.kafka.bootstrap_servers == advertised
    assert (agent.kafka.logs_topic, agent.kafka.spans_topic) == (
        collector.kafka.logs_topic,
        collector.kafka.spans_topic,
    )
    assert int(kafka["KAFKA_MESSAGE_MAX_BYTES"]) >= agent.kafka.max_request_bytes
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # else a typo'd topic gets 1 partition
    init = services()["kafka-init"]
    script = init["command"][0]
    for topic in (agent.kafka.logs_topic, agent.kafka.spans_topic):
        assert topic in script
    assert '--partitions "$$TETHER_PARTITIONS"' in script
    assert int(init["environment"]["TETHER_PARTITIONS"]) == documented_partitions()


def test_compose_configs_pass_tether_validate(tmp_path: Path) -> None:
    for kind, model in (("agent", AgentConfig), ("collector", CollectorConfig)):
        _, text, env = compose_config(kind, model)
        result = validate_cli(kind, text, env, tmp_path)
        assert result.returncode == 0, result.stderr


def test_prometheus_scrapes_the_ops_ports() -> None:
    agent, _, _ = compose_config("agent", AgentConfig)
    collector, _, _ = compose_config("collector", CollectorConfig)
    prometheus = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    (agent_target,) = jobs["tether-agent"]["static_configs"][0]["targets"]
    assert agent_target == f"agent:{_port(agent.ops.endpoint)}"
    (dns,) = jobs["tether-collector"]["dns_sd_configs"]
    assert dns["names"] == ["collector"] and dns["port"] == _port(collector.ops.endpoint)
    mounted = dict((c, h) for h, c in _bind_mounts(services()["prometheus"]))
    assert mounted["/etc/prometheus/prometheus.yml"] == COMPOSE_DIR / "prometheus.yml"


def test_grafana_mounts_our_provisioning_and_sets_its_datasource_urls() -> None:
    service = services()["grafana"]
    mounted = {c: h for h, c in _bind_mounts(service)}
    assert mounted["/etc/grafana/provisioning"] == REPO / "grafana" / "provisioning"
    assert mounted["/var/lib/grafana/dashboards"] == REPO / "grafana" / "dashboards"
    assert (REPO / "grafana" / "provisioning" / "datasources").is_dir()
    assert list((REPO / "grafana" / "dashboards").glob("*.json"))
    # The dashboard provider reads the directory the dashboards are mounted at.
    for path in (REPO / "grafana" / "provisioning" / "dashboards").glob("*.yaml"):
        for provider in yaml.safe_load(path.read_text())["providers"]:
            assert provider["options"]["path"] in mounted
    # Every ${VAR} the datasources use is set, to a compose service and a port it listens on.
    env = service["environment"]
    listening = {"elasticsearch": 9200, "jaeger": 16686, "prometheus": 9090}
    for path in (REPO / "grafana" / "provisioning" / "datasources").glob("*.yaml"):
        for name in _env_references(yaml.safe_load(path.read_text())):
            assert name in env, f"grafana needs {name} ({path.name})"
            url = urlsplit(env[name])
            assert url.hostname in services() and listening[url.hostname] == url.port, env[name]


def test_jaeger_stores_in_the_compose_elasticsearch() -> None:
    jaeger = yaml.safe_load((COMPOSE_DIR / "jaeger.yaml").read_text())
    backends = jaeger["extensions"]["jaeger_storage"]["backends"]
    (backend,) = backends.values()
    assert backend["elasticsearch"]["server_urls"] == ["http://elasticsearch:9200"]
    assert jaeger["extensions"]["jaeger_query"]["storage"]["traces"] in backends
    assert jaeger["exporters"]["jaeger_storage_exporter"]["trace_storage"] in backends
    assert _port(jaeger["extensions"]["jaeger_query"]["http"]["endpoint"]) == 16686
    health = _port(jaeger["extensions"]["healthcheckv2"]["http"]["endpoint"])
    assert f"localhost:{health}/status" in services()["jaeger"]["healthcheck"]["test"][1]


def _env_references(value: Any) -> Iterator[str]:
    """${NAME} in the string values of a parsed document ($${...} is Grafana's escape, not one)."""
    if isinstance(value, str):
        yield from re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _env_references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _env_references(item)


@pytest.mark.stack
def test_jaeger_validates_the_compose_config(stack: Stack, tmp_path: Path) -> None:
    """The Jaeger binary the local stack built (the compose image's version) accepts jaeger.yaml."""
    # The images are the versions the local stack runs (and the tests exercise).
    images = {name: service.get("image", "") for name, service in services().items()}
    assert images["jaeger"] == f"jaegertracing/jaeger:{stack.jaeger.release.removeprefix('v')}"
    assert images["kafka"] == images["kafka-init"] == f"apache/kafka:{stack.kafka.version}"
    assert images["elasticsearch"].endswith(f"/elasticsearch:{stack.elasticsearch.version}")
    assert images["kibana"].endswith(f"/kibana:{stack.elasticsearch.version}")
    config = COMPOSE_DIR / "jaeger.yaml"
    result = subprocess.run(
        [str(stack.jaeger.binary), "validate", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "error" not in result.stderr.lower(), result.stderr
    # and it does refuse a misspelt key
    broken = tmp_path / "jaeger.yaml"
    broken.write_text(config.read_text().replace("index_prefix:", "index_prefx:"))
    result = subprocess.run(
        [str(stack.jaeger.binary), "validate", "--config", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "index_prefx" in result.stderr


def _check_health(service: dict[str, Any], env: Mapping[str, str], ops_port: int) -> None:
    """The compose healthcheck and the image's HEALTHCHECK (TETHER_HEALTH_URL) hit the ops port."""
    check = " ".join(service["healthcheck"]["test"])
    assert f"127.0.0.1:{ops_port}/readyz" in check, check
    assert urlsplit(env["TETHER_HEALTH_URL"]).port == ops_port


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, value
    return float(match.group(1))


# --- Kubernetes -------------------------------------------------------------------------------------------


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    documents = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        documents += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def k8s(kind: str, name: str) -> dict[str, Any]:
    (document,) = [d for _, d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return document


def documented_partitions() -> int:
    return int(
        k8s("Deployment", "tether-collector")["metadata"]["annotations"]["tether.dev/kafka-partitions"]
    )


def container_env(container: dict[str, Any]) -> dict[str, str]:
    env = {}
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = str(variable["value"])
        else:
            assert variable["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName", variable
            env[variable["name"]] = NODE_NAME
    return env


def workload_config(
    workload: dict[str, Any], model: type[M]
) -> tuple[M, str, dict[str, Any], dict[str, str]]:
    """The config a workload's container runs with: the ConfigMap key its --config names, its env."""
    pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config_path = Path(_config_arg(container["args"]))
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == config_path.parent]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_map = k8s("ConfigMap", volume["configMap"]["name"])
    text = config_map["data"][config_path.name]
    env = container_env(container)
    return load_config_text(text, model, env, config_path.name), text, container, env


@pytest.mark.parametrize(
    "path_and_document",
    k8s_documents(),
    ids=lambda pd: f"{pd[0].name}:{pd[1]['kind']}/{pd[1]['metadata']['name']}",
)
def test_manifest_validates_against_the_kubernetes_api_schema(path_and_document: tuple[Path, Any]) -> None:
    _, document = path_and_document
    # strict: unknown fields (a typo'd key Kubernetes would silently drop) are errors too
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kubernetes_schema_check_rejects_a_wrong_manifest() -> None:
    document = k8s("DaemonSet", "tether-agent")
    broken = {**document, "spec": {**document["spec"], "replicas": 2}}  # DaemonSets have none
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(manifests)
    namespaces = {d["metadata"].get("namespace") for _, d in k8s_documents() if d["kind"] != "Namespace"}
    assert namespaces == {kustomization["namespace"]} == {k8s("Namespace", "tether")["metadata"]["name"]}
    images = {c["image"].split(":")[0] for _, d in k8s_documents() for c in _pod_containers(d)}
    assert images == {i["name"] for i in kustomization["images"]}


def _pod_containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    if document["kind"] not in ("DaemonSet", "Deployment"):
        return []
    pod = document["spec"]["template"]["spec"]
    return list(pod["containers"]) + list(pod.get("initContainers", []))


def test_agent_daemonset_follows_its_config() -> None:
    daemonset = k8s("DaemonSet", "tether-agent")
    config, _, container, _ = workload_config(daemonset, AgentConfig)
    pod = daemonset["spec"]["template"]["spec"]
    assert config.agent_id == NODE_NAME  # one stable id per host
    assert config.otlp is not None and config.otlp.grpc_endpoint and config.otlp.http_endpoint
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "otlp-grpc": _port(config.otlp.grpc_endpoint),
        "otlp-http": _port(config.otlp.http_endpoint),
        "ops": _port(config.ops.endpoint),
    }
    _check_probes(container, ports, _port(config.ops.endpoint), ready="/healthz")
    assert pod["terminationGracePeriodSeconds"] > 2 * config.shutdown_grace_seconds
    # /var/log read-only from the host; checkpoints and spool on a hostPath that outlives the pod.
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert config.files is not None
    for pattern in config.files.include:
        (log_mount,) = [m for path, m in mounts.items() if pattern.startswith(path + "/")]
        assert log_mount["readOnly"] is True
        assert volumes[log_mount["name"]]["hostPath"]["path"].startswith("/var/log")
    (state,) = [m for path, m in mounts.items() if str(config.data_dir).startswith(path)]
    assert "hostPath" in volumes[state["name"]] and not state.get("readOnly")
    _check_non_root(pod, container)
    # The init container that hands the state directory to the agent's uid does nothing else.
    (init,) = pod["initContainers"]
    assert init["command"] == ["chown", f"{DOCKER_UID}:{DOCKER_UID}", state["mountPath"]]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}


def test_agent_service_reaches_the_local_agent_on_its_ports() -> None:
    daemonset = k8s("DaemonSet", "tether-agent")
    _, _, container, _ = workload_config(daemonset, AgentConfig)
    service = k8s("Service", "tether-agent")
    assert service["spec"]["internalTrafficPolicy"] == "Local"
    _check_service(service, daemonset, container)


def test_collector_deployment_follows_its_config() -> None:
    deployment = k8s("Deployment", "tether-collector")
    config, _, container, _ = workload_config(deployment, CollectorConfig)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"ops": _port(config.ops.endpoint)}
    _check_probes(container, ports, _port(config.ops.endpoint))
    assert 1 <= deployment["spec"]["replicas"] <= documented_partitions()
    _check_non_root(deployment["spec"]["template"]["spec"], container)
    _check_service(k8s("Service", "tether-collector"), deployment, container)
    pdb = k8s("PodDisruptionBudget", "tether-collector")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= _pod_labels(deployment).items()
    assert pdb["spec"]["maxUnavailable"] < deployment["spec"]["replicas"]


def test_kubernetes_configs_pass_tether_validate(tmp_path: Path) -> None:
    for kind, model, workload in (
        ("agent", AgentConfig, k8s("DaemonSet", "tether-agent")),
        ("collector", CollectorConfig, k8s("Deployment", "tether-collector")),
    ):
        _, text, _, env = workload_config(workload, model)
        result = validate_cli(kind, text, env, tmp_path)
        assert result.returncode == 0, result.stderr
    # The agent id comes from the pod's env only: without it the config is refused (exit 2).
    _, text, _, env = workload_config(k8s("DaemonSet", "tether-agent"), AgentConfig)
    del env["TETHER_AGENT_ID"]
    result = validate_cli("agent", text, env, tmp_path)
    assert result.returncode == 2 and "TETHER_AGENT_ID" in result.stderr
    with pytest.raises(ConfigError):
        load_config_text(text, AgentConfig, env, "agent.yaml")


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    return labels


def _check_service(service: dict[str, Any], workload: dict[str, Any], container: dict[str, Any]) -> None:
    assert service["spec"]["selector"].items() <= _pod_labels(workload).items()
    names = {p["name"]: p["containerPort"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        assert names[port["targetPort"]] == port["port"], port


def _check_probes(
    container: dict[str, Any], ports: dict[str, int], ops_port: int, ready: str = "/readyz"
) -> None:
    """The agent routes by /healthz (it accepts into its spool while Kafka is down); the
    collector's readiness is /readyz."""
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", ready)):
        http = container[probe]["httpGet"]
        assert http["path"] == path
        assert ports.get(http["port"], http["port"]) == ops_port


def _check_non_root(pod: dict[str, Any], container: dict[str, Any]) -> None:
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    assert context["runAsNonRoot"] is True and context["runAsUser"] == DOCKER_UID
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}


# --- systemd ----------------------------------------------------------------------------------------------


def systemd_unit() -> configparser.ConfigParser:
    # strict=False: systemd allows repeated keys (SystemCallFilter=); no interpolation: % and $ are
    # systemd's own specifiers.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((SYSTEMD_DIR / "tether-agent.service").read_text())
    return parser


def test_systemd_unit_runs_the_agent_unprivileged_hardened_and_restarting() -> None:
    unit = systemd_unit()
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service.get("DynamicUser") == "yes" or service.get("User") == "tether"
    assert service["StateDirectory"] == "tether"
    assert "adm" in service["SupplementaryGroups"].split()
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "yes"
    assert service["RestartPreventExitStatus"] == "2"  # validate's exit status for a bad config
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    pre, start = shlex.split(service["ExecStartPre"]), shlex.split(service["ExecStart"])
    assert pre[1:3] == ["agent", "validate"] and start[1] == "agent"
    assert _config_arg(pre) == _config_arg(start) == "${CONFIGURATION_DIRECTORY}/agent.yaml"
    assert service["ConfigurationDirectory"] == "tether"


def test_systemd_example_config_lives_in_the_state_directory_and_stops_in_time(tmp_path: Path) -> None:
    service = systemd_unit()["Service"]
    text = (SYSTEMD_DIR / "agent.yaml").read_text()
    env = {"TETHER_AGENT_ID": "host-1"}
    config = load_config_text(text, AgentConfig, env, "agent.yaml")
    assert config.agent_id == "host-1"
    # ProtectSystem=strict leaves only the StateDirectory writable: checkpoints and spool go there.
    assert config.data_dir == Path("/var/lib") / service["StateDirectory"]
    assert config.spool_directory.is_relative_to(config.data_dir)
    assert _seconds(service["TimeoutStopSec"] + "s") > 2 * config.shutdown_grace_seconds
    result = validate_cli("agent", text, env, tmp_path)
    assert result.returncode == 0, result.stderr


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # Never skipped: without systemd's own check the unit would be verified by our parser alone.
    assert shutil.which("systemd-analyze"), "systemd-analyze is needed (Debian/Ubuntu package: systemd)"
    # verify checks that ExecStart binaries exist: point them at this checkout's tether.
    unit = (SYSTEMD_DIR / "tether-agent.service").read_text()
    assert "/opt/tether/venv/bin/tether" in unit
    copy = tmp_path / "tether-agent.service"
    copy.write_text(unit.replace("/opt/tether/venv/bin/tether", str(TETHER)))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    # systemd's own exposure score of the sandboxing, 0.0 (best) to 10.0; without hardening ~9.
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    score = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert score and float(score.group(1)) <= 3.0, result.stdout[-2000:] + result.stderr
    # and it does object to a broken unit
    copy.write_text(unit.replace("[Service]", "[Service]\nRestartt=always"))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert "Restartt" in result.stderr


# --- Dockerfile -------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped.removesuffix("\\").strip() + " "
        if not stripped.endswith("\\"):
            keyword, _, arguments = pending.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
    return instructions


def _user_of(arguments: str) -> str:
    return arguments.split(":")[0]


def _dockerfile_uid() -> int | None:
    """The runtime's numeric uid (Kubernetes' runAsNonRoot can only check a number), if it has one."""
    users = [a for i, a in dockerfile_instructions() if i == "USER"]
    return int(_user_of(users[-1])) if users and _user_of(users[-1]).isdigit() else None


DOCKER_UID = _dockerfile_uid()


def test_dockerfile_is_multi_stage_and_ends_non_root() -> None:
    instructions = dockerfile_instructions()
    stages = [a for i, a in instructions if i == "FROM"]
    assert len(stages) >= 3, stages  # rust toolchain, builder, runtime
    last_from = max(n for n, (i, _) in enumerate(instructions) if i == "FROM")
    users = [a for i, a in instructions[last_from:] if i == "USER"]
    assert users and _user_of(users[-1]) not in ("root", "0"), users
    assert DOCKER_UID is not None and DOCKER_UID >= 1000, users
    final = dict(instructions[last_from:])
    assert final["ENTRYPOINT"] == '["tether"]'
    assert "HEALTHCHECK" in final and "urllib" in final["HEALTHCHECK"]
    # The runtime installs wheels only: no compiler, no source tree.
    assert not [a for i, a in instructions[last_from:] if i == "COPY" and "--from" not in a]


def test_dockerfile_exposes_the_ports_of_the_configs() -> None:
    otlp = AgentConfig.model_fields["otlp"].get_default(call_default_factory=True)
    agent_ops = AgentConfig.model_fields["ops"].get_default(call_default_factory=True)
    collector_ops = CollectorConfig.model_fields["ops"].get_default(call_default_factory=True)
    wanted = {
        _port(otlp.grpc_endpoint),
        _port(otlp.http_endpoint),
        _port(agent_ops.endpoint),
        _port(collector_ops.endpoint),
    }
    (expose,) = [a for i, a in dockerfile_instructions() if i == "EXPOSE"]
    assert {int(p) for p in expose.split()} == wanted


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignore = DOCKERFILE.with_name("Dockerfile.dockerignore").read_text().splitlines()
    ignored = [p.strip() for p in ignore if p.strip() and not p.startswith("#")]
    copies = [a for i, a in dockerfile_instructions() if i == "COPY" and "--from" not in a]
    assert copies
    for arguments in copies:
        *sources, _ = [a for a in arguments.split() if not a.startswith("--")]
        for source in sources:
            path = REPO / source.rstrip("/")
            assert path.exists(), f"COPY {source}: not in the repository"
            relative = path.relative_to(REPO).as_posix()
            for pattern in ignored:
                bare = pattern.removeprefix("**/")
                assert relative != bare and not relative.startswith(bare + "/"), (source, pattern)
    # The source tree the builder needs: every package the wheel is built from.
    copied = {s.rstrip("/") for a in copies for s in a.split()[:-1] if not s.startswith("--")}
    packages = {"tether", "agent", "collector", "schemas", "native/fastlog", "pyproject.toml", "README.md"}
    assert packages <= copied, packages - copied
    # Built wheels and Cargo's target directory stay out of the context.
    assert "native/fastlog/target" in ignored and "**/.venv" in ignored


def test_dockerfile_uid_is_the_one_kubernetes_runs_as() -> None:
    for workload in (k8s("DaemonSet", "tether-agent"), k8s("Deployment", "tether-collector")):
        assert workload["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == DOCKER_UID
    text = DOCKERFILE.read_text()
    assert f"--uid {DOCKER_UID}" in text and f"--gid {DOCKER_UID}" in text
