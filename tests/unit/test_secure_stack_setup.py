"""The secure stack's set-up, without starting a server: ports, secrets on disk, server configs.

The configs are checked by the servers' own tools where they are cached (Kafka's storage format,
Jaeger's `validate`): those read the very files `tether stack up --secure` starts the servers with.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import zipfile
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.cli import app
from tether.stack import SecureStack, SecureStackConfig, Stack, StackConfig
from tether.stack.credentials import StackCredentials
from tether.stack.kafka import new_cluster_id
from tether.stack.manager import default_cache_dir
from tether.stack.secure_elasticsearch_plugin import CLASS_NAME, PLUGIN_NAME, build_plugin_zip

PORT_FIELDS = [f.name for f in dataclasses.fields(StackConfig) if f.name.endswith("_port")]


@pytest.fixture
def secure(tmp_path: Path) -> SecureStack:
    stack = SecureStack(SecureStackConfig(cache_dir=tmp_path / "secure"))
    stack.set_up_security(report=lambda _line: None)
    return stack


def all_secrets(credentials: StackCredentials) -> list[str]:
    return [
        credentials.kafka_password,
        credentials.kafka_admin_password,
        credentials.elasticsearch_password,
        credentials.elastic_password,
    ]


def test_every_port_and_directory_differs_from_the_open_stack() -> None:
    open_config, secure_config = StackConfig(), SecureStackConfig()
    open_ports = {getattr(open_config, name) for name in PORT_FIELDS} | {open_config.elasticsearch_port + 100}
    secure_ports = [getattr(secure_config, name) for name in PORT_FIELDS]
    secure_ports.append(secure_config.elasticsearch_port + 100)
    assert not open_ports & set(secure_ports)
    assert len(set(secure_ports)) == len(secure_ports)
    assert secure_config.cache_dir != open_config.cache_dir
    assert secure_config.elasticsearch_base != open_config.elasticsearch_base
    assert (secure_config.kafka_port, secure_config.elasticsearch_port) == (19092, 19200)
    assert secure_config.jaeger_otlp_grpc_port == 24317


def test_secure_stack_reuses_the_open_stacks_jaeger_build() -> None:
    assert SecureStack().jaeger.bin_dir == default_cache_dir() / "bin"


def test_credentials_are_random_private_and_kept(secure: SecureStack) -> None:
    credentials = secure.credentials
    assert len(set(all_secrets(credentials))) == 4
    assert secure.credentials_file.stat().st_mode & 0o077 == 0
    assert secure.config.cache_dir.stat().st_mode & 0o077 == 0
    for name, value in (
        ("kafka-password", credentials.kafka_password),
        ("elasticsearch-password", credentials.elasticsearch_password),
        ("elastic-password", credentials.elastic_password),
    ):
        assert secure.secrets_dir.joinpath(name).read_text() == value
        assert secure.secrets_dir.joinpath(name).stat().st_mode & 0o077 == 0
    secure.set_up_security(report=lambda _line: None)
    assert secure.credentials == credentials


def test_repr_of_credentials_hides_every_secret(secure: SecureStack) -> None:
    credentials = secure.credentials.with_service_token("elastic/fleet-server/tether", "token-secret")
    text = repr(credentials)
    for secret in [*all_secrets(credentials), "token-secret"]:
        assert secret not in text


def test_service_token_is_stored_alone_for_a_file_key(secure: SecureStack) -> None:
    secure.credentials.with_service_token("elastic/fleet-server/tether", "token-secret")
    credentials = secure.credentials
    assert credentials.service_token_name == "elastic/fleet-server/tether"
    assert secure.secrets_dir.joinpath("service-token").read_text() == "token-secret"


def test_api_key_is_stored_with_its_encoded_form(secure: SecureStack) -> None:
    secure.credentials.with_api_key("key-id", "key-secret")
    credentials = secure.credentials
    assert credentials.api_key_encoded == base64.b64encode(b"key-id:key-secret").decode()
    assert secure.secrets_dir.joinpath("api-key-encoded").read_text() == credentials.api_key_encoded


def test_credentials_with_fields_of_another_version_still_load(secure: SecureStack) -> None:
    record = json.loads(secure.credentials_file.read_text())
    secure.credentials_file.write_text(json.dumps({**record, "field_of_another_version": None}))
    assert secure.credentials.elastic_password == record["elastic_password"]


def test_kafka_listens_only_with_sasl_ssl_on_its_port(secure: SecureStack, tmp_path: Path) -> None:
    properties = secure.kafka.server_properties(tmp_path / "data")
    settings = dict(line.split("=", 1) for line in properties.splitlines() if "=" in line)
    assert settings["listeners"] == (
        "SASL_SSL://127.0.0.1:19092,MTLS://127.0.0.1:19095,CONTROLLER://127.0.0.1:19094"
    )
    assert settings["advertised.listeners"] == "SASL_SSL://127.0.0.1:19092,MTLS://127.0.0.1:19095"
    assert (
        settings["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,MTLS:SASL_SSL,CONTROLLER:PLAINTEXT"
    )
    # a client certificate: asked for on SASL_SSL, required on MTLS (the same SCRAM logins on both)
    assert settings["ssl.client.auth"] == "requested"
    assert settings["listener.name.mtls.ssl.client.auth"] == "required"
    for listener in ("sasl_ssl", "mtls"):
        for mechanism in ("scram-sha-256", "scram-sha-512"):
            assert "ScramLoginModule" in settings[f"listener.name.{listener}.{mechanism}.sasl.jaas.config"]
    assert secure.kafka.mtls_bootstrap == "127.0.0.1:19095"
    assert settings["sasl.enabled.mechanisms"] == "SCRAM-SHA-256,SCRAM-SHA-512"
    assert settings["ssl.keystore.location"] == str(secure.certificates.server.bundle)
    assert settings["ssl.truststore.location"] == str(secure.certificates.ca.cert)
    assert "PLAINTEXT://" not in settings["listeners"].replace("CONTROLLER://", "")


def test_kafka_scram_users_for_both_mechanisms(secure: SecureStack) -> None:
    arguments = secure.kafka.format_arguments()
    users = arguments[1::2]
    c = secure.credentials
    assert sorted(c.kafka_user_passwords) == ["tether-agent", "tether-collector"]  # docs/security.md's
    assert arguments[0::2] == ["--add-scram"] * 8
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        assert f"{mechanism}=[name=tether,password={c.kafka_password}]" in users
        assert f"{mechanism}=[name=admin,password={c.kafka_admin_password}]" in users
        for name, password in c.kafka_user_passwords.items():
            assert f"{mechanism}=[name={name},password={password}]" in users
            assert secure.secrets_dir.joinpath(f"kafka-password-{name}").read_text() == password


def test_kafka_enforces_acls_with_the_stacks_own_users_as_super_users(
    secure: SecureStack, tmp_path: Path
) -> None:
    properties = secure.kafka.server_properties(tmp_path / "data")
    settings = dict(line.split("=", 1) for line in properties.splitlines() if "=" in line)
    assert settings["authorizer.class.name"].endswith(".StandardAuthorizer")
    assert settings["super.users"].split(";") == ["User:admin", "User:tether", "User:ANONYMOUS"]
    assert settings["allow.everyone.if.no.acl.found"] == "false"


def test_new_documented_kafka_users_remake_only_kafkas_data(secure: SecureStack) -> None:
    """Credentials of an older stack (no documented users): the users are added and Kafka's data,
    formatted without them, goes; Elasticsearch's stays."""
    record = json.loads(secure.credentials_file.read_text())
    del record["kafka_user_passwords"]
    secure.credentials_file.write_text(json.dumps(record))
    kafka_data, es_data = secure.kafka.home / "data", secure.elasticsearch.base / "data"
    kafka_data.mkdir(parents=True)
    es_data.mkdir(parents=True)
    lines: list[str] = []
    secure.set_up_security(report=lines.append)
    assert sorted(secure.credentials.kafka_user_passwords) == ["tether-agent", "tether-collector"]
    assert secure.credentials.kafka_password == record["kafka_password"]
    assert not kafka_data.exists() and es_data.exists()
    assert any("new Kafka users" in line for line in lines)


@pytest.mark.stack
def test_kafka_storage_tool_accepts_the_config_and_users(
    stack: Stack, secure: SecureStack, tmp_path: Path
) -> None:
    libs = default_cache_dir() / "kafka-3.9.1" / "libs"  # provisioned by the open stack
    assert (libs / ".complete").exists() and shutil.which("java") is not None
    data, config = tmp_path / "data", tmp_path / "server.properties"
    config.write_text(secure.kafka.server_properties(data))
    cluster_id = new_cluster_id()
    result = subprocess.run(
        [
            *("java", "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format"),
            *("-t", cluster_id, "-c", str(config), *secure.kafka.format_arguments()),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (data / "bootstrap.checkpoint").exists()


# Kafka's own TLS code (SslFactory) reads the broker's properties as the broker does, and the
# broker's inter-broker client completes a handshake with its server side in memory.
KAFKA_TLS_CHECK = """\
import java.nio.ByteBuffer;
import java.nio.file.*;
import java.util.Properties;
import javax.net.ssl.SSLEngine;
import kafka.server.KafkaConfig;
import org.apache.kafka.common.network.ConnectionMode;
import org.apache.kafka.common.security.ssl.SslFactory;
void run(SSLEngine e) { Runnable t; while ((t = e.getDelegatedTask()) != null) t.run(); }
var props = new Properties();
props.load(Files.newBufferedReader(Paths.get("CONFIG")));
var listener = KafkaConfig.fromProps(props, false).valuesWithPrefixOverride("listener.name.sasl_ssl.");
var serverFactory = new SslFactory(ConnectionMode.SERVER, null, true);
serverFactory.configure(listener);
var clientFactory = new SslFactory(ConnectionMode.CLIENT, null, false);
clientFactory.configure(listener);
var c = clientFactory.createSslEngine("127.0.0.1", 19092);
var s = serverFactory.createSslEngine("127.0.0.1", 0);
var none = ByteBuffer.allocate(0); var app = ByteBuffer.allocate(1 << 16);
var up = ByteBuffer.allocate(1 << 16); var down = ByteBuffer.allocate(1 << 16);
c.beginHandshake(); s.beginHandshake();
for (int i = 0; i < 50; i++) {
  run(c); run(s);
  c.wrap(none, up); up.flip(); s.unwrap(up, app); up.compact(); run(s);
  s.wrap(none, down); down.flip(); c.unwrap(down, app); down.compact(); run(c);
}
var peer = c.getSession().getPeerPrincipal();
System.out.println("want-client-auth=" + s.getWantClientAuth() + " peer=" + peer);
/exit
"""


@pytest.mark.stack
def test_kafkas_tls_code_loads_the_pem_stores_and_verifies_the_broker(
    stack: Stack, secure: SecureStack, tmp_path: Path
) -> None:
    libs = default_cache_dir() / "kafka-3.9.1" / "libs"
    assert (libs / ".complete").exists() and shutil.which("jshell") is not None  # the `stack` fixture
    config, script = tmp_path / "server.properties", tmp_path / "check.jsh"
    config.write_text(secure.kafka.server_properties(tmp_path / "data"))
    script.write_text(KAFKA_TLS_CHECK.replace("CONFIG", str(config)))
    class_path = ":".join(str(jar) for jar in sorted(libs.glob("*.jar")))
    result = subprocess.run(
        ["jshell", "--class-path", class_path, str(script)], capture_output=True, text=True, check=False
    )
    assert "want-client-auth=true peer=CN=tether local server" in result.stdout, result.stdout + result.stderr


ES_PEM_CHECK = """\
import java.nio.file.*;
import org.elasticsearch.common.ssl.PemUtils;
var key = PemUtils.readPrivateKey(Paths.get("KEY"), () -> null);
var chain = PemUtils.readCertificates(java.util.List.of(Paths.get("CERT")));
System.out.println("key=" + key.getAlgorithm() + " certificates=" + chain.size());
/exit
"""


@pytest.mark.stack
def test_elasticsearchs_own_pem_reader_reads_the_key_and_certificate(
    stack: Stack, secure: SecureStack, tmp_path: Path
) -> None:
    home = StackConfig().elasticsearch_base / "elasticsearch-8.19.9"  # the open stack's, read only
    ssl_config = home / "modules" / "x-pack-core" / "elasticsearch-ssl-config-8.19.9.jar"
    assert ssl_config.exists() and shutil.which("jshell") is not None  # the `stack` fixture
    script = tmp_path / "check.jsh"
    server = secure.certificates.server
    script.write_text(ES_PEM_CHECK.replace("KEY", str(server.key)).replace("CERT", str(server.cert)))
    class_path = ":".join([*(str(jar) for jar in sorted((home / "lib").glob("*.jar"))), str(ssl_config)])
    result = subprocess.run(
        ["jshell", "--class-path", class_path, str(script)], capture_output=True, text=True, check=False
    )
    assert "key=RSA certificates=1" in result.stdout, result.stdout + result.stderr


def test_elasticsearch_config_turns_security_and_tls_on(secure: SecureStack) -> None:
    yml = secure.elasticsearch.elasticsearch_yml()
    assert "xpack.security.enabled: false" not in yml
    for line in (
        "xpack.security.enabled: true",
        "xpack.security.http.ssl.enabled: true",
        "http.port: 19200",
        "transport.port: 19300",
        # The stack's users are files; users made through the API are native (.security index).
        "xpack.security.authc.realms.file.file1.order: 0",
        "xpack.security.authc.realms.native.native1.order: 1",
    ):
        assert line in yml.splitlines()
    assert secure.elasticsearch.url == "https://127.0.0.1:19200"


@pytest.mark.stack
def test_security_index_analysis_plugin_compiles_against_the_distributions_jars(
    stack: Stack, tmp_path: Path
) -> None:
    home = StackConfig().elasticsearch_base / "elasticsearch-8.19.9"  # the open stack's, read only
    assert (home / "lib").is_dir() and shutil.which("javac") is not None  # the `stack` fixture
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    archive = build_plugin_zip(home, "8.19.9", tmp_path / "build", env)
    with zipfile.ZipFile(archive) as plugin_zip:
        lines = plugin_zip.read("plugin-descriptor.properties").decode().splitlines()
        descriptor = dict(line.split("=", 1) for line in lines)
        jar = io.BytesIO(plugin_zip.read(f"{PLUGIN_NAME}.jar"))
    assert descriptor["elasticsearch.version"] == "8.19.9"
    assert descriptor["classname"] == CLASS_NAME
    with zipfile.ZipFile(jar) as classes:
        assert CLASS_NAME.replace(".", "/") + ".class" in classes.namelist()


@pytest.mark.stack
def test_jaeger_config_has_tls_and_passes_jaegers_validate(
    stack: Stack, secure: SecureStack, tmp_path: Path
) -> None:
    jaeger = secure.jaeger
    template = resources.files("tether.stack").joinpath(jaeger.config_template).read_text()
    values = jaeger.template_values()
    config = re.sub(r"\{(\w+)\}", lambda m: str(values[m.group(1)]), template)
    assert config.count(f'cert_file: "{secure.certificates.server.cert}"') == 2
    assert 'endpoint: "127.0.0.1:24317"' in config
    assert jaeger.binary.exists()  # built by the `stack` fixture
    path = tmp_path / "jaeger.yaml"
    path.write_text(config)
    result = subprocess.run(
        [str(jaeger.binary), "validate", "--config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_status_names_the_credentials_file_and_never_a_secret(secure: SecureStack) -> None:
    result = CliRunner().invoke(
        app, ["stack", "status", "--secure", "--cache-dir", str(secure.config.cache_dir)]
    )
    assert result.exit_code == 1, result.output  # nothing runs
    assert str(secure.credentials_file) in result.output
    assert str(secure.certificates.ca.cert) in result.output
    assert "127.0.0.1:19092" in result.output
    for secret in all_secrets(secure.credentials):
        assert secret not in result.output


def test_cluster_ids_never_start_as_an_option() -> None:
    """1 in 64 random ids began with '-', which the storage tool took for an option."""
    ids = [new_cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
