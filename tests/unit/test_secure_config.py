"""Security settings: models, the client arguments they make, secrets kept out of every text."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.unit.tls_certificates import Authority, authority
from tether.agent.config import AgentConfig
from tether.cli import app
from tether.collector.config import CollectorConfig, JaegerSinkConfig
from tether.config import ConfigError, load_config, parse_config
from tether.elasticsearch_security import ElasticsearchConnection
from tether.kafka_security import KafkaSecurity
from tether.query.connection import load_connection

SECRET = "s3cr3t-Hunter2-do-not-print"


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return authority(tmp_path / "pki")


def collector_yaml(body: str) -> str:
    return "kafka:\n  bootstrap_servers: 127.0.0.1:9093\n" + body


def problems(text: str, model: type = CollectorConfig) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, model)
    return str(caught.value)


# --- secrets: inline or file, exactly one, masked everywhere ---------------------------------------


def test_secret_from_file_loses_one_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "password").write_text(SECRET + "\n")
    config = parse_config(
        collector_yaml(
            "  security_protocol: SASL_PLAINTEXT\n"
            f"  sasl: {{mechanism: PLAIN, username: tether, password_file: {tmp_path / 'password'}}}\n"
        ),
        CollectorConfig,
    )
    assert config.kafka.sasl is not None
    assert config.kafka.sasl.secret("password").get_secret_value() == SECRET  # type: ignore[union-attr]


def test_secret_inline_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(
        collector_yaml(
            "  security_protocol: SASL_PLAINTEXT\n"
            "  sasl: {mechanism: SCRAM-SHA-256, username: tether, password: '${KAFKA_PASSWORD}'}\n"
        )
    )
    config = load_config(path, CollectorConfig, {"KAFKA_PASSWORD": SECRET})
    assert config.kafka.sasl is not None
    assert config.kafka.sasl.secret("password").get_secret_value() == SECRET  # type: ignore[union-attr]


def test_secret_both_ways_or_neither_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "password").write_text(SECRET)
    both = problems(
        collector_yaml(
            "  security_protocol: SASL_SSL\n"
            f"  sasl: {{username: u, password: {SECRET}, password_file: {tmp_path / 'password'}}}\n"
        )
    )
    assert "kafka.sasl: " in both and "password and password_file are both set" in both
    neither = problems(collector_yaml("  security_protocol: SASL_SSL\n  sasl: {username: u}\n"))
    assert "kafka.sasl: " in neither and "password_file" in neither
    missing = problems(
        collector_yaml(
            f"  security_protocol: SASL_SSL\n  sasl: {{username: u, password_file: {tmp_path}/x}}\n"
        )
    )
    assert "password_file: no such file" in missing
    assert SECRET not in both + neither + missing


def test_secrets_are_masked_in_repr_str_and_dumps(tmp_path: Path) -> None:
    (tmp_path / "api-key").write_text(SECRET)
    config = parse_config(
        collector_yaml(
            "  security_protocol: SASL_SSL\n"
            f"  sasl: {{username: u, password: {SECRET}}}\n"
            "elasticsearch:\n"
            f"  url: https://es.example:9200\n  api_key_file: {tmp_path / 'api-key'}\n"
            f"jaeger:\n  bearer_token: {SECRET}\n  headers: {{x-tenant: {SECRET}}}\n"
        ),
        CollectorConfig,
    )
    texts = [repr(config), str(config), str(config.model_dump()), config.model_dump_json()]
    assert all(SECRET not in text for text in texts)
    assert "**********" in config.model_dump_json()
    assert config.elasticsearch.client_kwargs()["api_key"] == SECRET  # the value is still there to use


def test_misspelt_secret_key_is_not_echoed() -> None:
    text = problems(collector_yaml(f"elasticsearch:\n  username: elastic\n  pasword: {SECRET}\n"))
    assert "elasticsearch.pasword: unknown key" in text
    assert SECRET not in text


# --- Kafka ---------------------------------------------------------------------------------------


def test_kafka_plaintext_by_default_makes_no_tls_or_sasl() -> None:
    config = parse_config(collector_yaml(""), CollectorConfig)
    assert config.kafka.aiokafka_security_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_kafka_sasl_ssl_with_mutual_tls(ca: Authority) -> None:
    client = ca.issue("client", ("tether-agent",), client=True)
    config = KafkaSecurity.model_validate(
        {
            "security_protocol": "SASL_SSL",
            "tls": {"ca_file": ca.ca_file, "cert_file": client.cert_file, "key_file": client.key_file},
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": "tether", "password": SECRET},
        }
    )
    kwargs = config.aiokafka_security_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "tether",
        "sasl_plain_password": SECRET,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "tether test CA"),),)]


def test_kafka_ssl_without_tls_section_trusts_the_system_store() -> None:
    kwargs = KafkaSecurity(security_protocol="SSL").aiokafka_security_kwargs()
    assert kwargs["ssl_context"].check_hostname
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("yaml", "expected"),
    [
        ("  security_protocol: SASL_SSL\n", "needs a sasl section"),
        ("  security_protocol: PLAINTEXT\n  tls: {}\n", "tls is set but security_protocol is PLAINTEXT"),
        ("  security_protocol: SSL\n  sasl: {username: u, password: p}\n", "use SASL_SSL"),
        ("  security_protocol: TLS\n", "kafka.security_protocol: Input should be"),
        (
            "  security_protocol: SASL_SSL\n  sasl: {mechanism: GSSAPI, username: u, password: p}\n",
            "kafka.sasl.mechanism",
        ),
    ],
)
def test_kafka_settings_that_do_not_fit_together(yaml: str, expected: str) -> None:
    assert expected in problems(collector_yaml(yaml))


def test_agent_kafka_takes_the_same_keys(tmp_path: Path, ca: Authority) -> None:
    config = parse_config(
        f"data_dir: {tmp_path}\nkafka:\n  bootstrap_servers: k:9093\n  security_protocol: SSL\n"
        f"  tls: {{ca_file: {ca.ca_file}}}\n",
        AgentConfig,
    )
    assert config.kafka.aiokafka_security_kwargs()["security_protocol"] == "SSL"


# --- TLS files are checked when loaded, naming the key ---------------------------------------------


def test_tls_files_must_exist_and_parse(tmp_path: Path, ca: Authority) -> None:
    client = ca.issue("client", client=True)
    other = ca.issue("other", client=True)
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    base = "  security_protocol: SSL\n  tls:\n"
    assert "kafka.tls.ca_file: Value error, no such file" in problems(
        collector_yaml(base + f"    ca_file: {tmp_path}/missing.pem\n")
    )
    assert "kafka.tls.ca_file: Value error" in problems(collector_yaml(base + f"    ca_file: {not_pem}\n"))
    assert "kafka.tls.cert_file" in problems(
        collector_yaml(base + f"    cert_file: {not_pem}\n    key_file: {client.key_file}\n")
    )
    mismatch = problems(
        collector_yaml(base + f"    cert_file: {client.cert_file}\n    key_file: {other.key_file}\n")
    )
    assert "kafka.tls: " in mismatch and "key_file" in mismatch and "is not the private key" in mismatch
    alone = problems(collector_yaml(base + f"    cert_file: {client.cert_file}\n"))
    assert "cert_file and key_file go together" in alone


def test_encrypted_key_needs_its_password(ca: Authority) -> None:
    client = ca.issue("client", client=True, key_password=SECRET.encode())
    tls = {"cert_file": client.cert_file, "key_file": client.key_file}
    with pytest.raises(ValueError, match="is encrypted: set key_password") as caught:
        KafkaSecurity.model_validate({"security_protocol": "SSL", "tls": tls})
    wrong = {**tls, "key_password": "not-it"}
    with pytest.raises(ValueError, match="cannot be decrypted") as wrong_caught:
        KafkaSecurity.model_validate({"security_protocol": "SSL", "tls": wrong})
    assert "not-it" not in str(wrong_caught.value) and SECRET not in str(caught.value)
    ok = KafkaSecurity.model_validate({"security_protocol": "SSL", "tls": {**tls, "key_password": SECRET}})
    assert isinstance(ok.aiokafka_security_kwargs()["ssl_context"], ssl.SSLContext)


def test_validate_names_the_wrong_file_and_never_prints_secrets(tmp_path: Path, ca: Authority) -> None:
    config = tmp_path / "collector.yaml"
    config.write_text(
        collector_yaml(
            "  security_protocol: SASL_SSL\n"
            f"  tls: {{ca_file: {tmp_path}/nope.pem}}\n"
            f"  sasl: {{username: u, password: {SECRET}}}\n"
            f"elasticsearch: {{url: 'https://es:9200', username: elastic, password: {SECRET}}}\n"
        )
    )
    result = CliRunner().invoke(app, ["collector", "validate", "--config", str(config)])
    assert result.exit_code == 2
    assert "kafka.tls.ca_file" in result.output and "no such file" in result.output
    assert SECRET not in result.output
    config.write_text(config.read_text().replace(f"{tmp_path}/nope.pem", str(ca.ca_file)))
    result = CliRunner().invoke(app, ["collector", "validate", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output


# --- Elasticsearch -------------------------------------------------------------------------------


def test_elasticsearch_basic_auth_and_ca(ca: Authority) -> None:
    connection = ElasticsearchConnection.model_validate(
        {"url": "https://es:9200", "username": "tether", "password": SECRET, "tls": {"ca_file": ca.ca_file}}
    )
    kwargs = connection.client_kwargs()
    assert kwargs["hosts"] == ["https://es:9200"]
    assert kwargs["basic_auth"] == ("tether", SECRET)
    assert kwargs["ssl_context"].check_hostname


def test_elasticsearch_api_keys_and_cloud_id() -> None:
    encoded = ElasticsearchConnection(api_key=SECRET).client_kwargs()  # type: ignore[arg-type]
    assert encoded["api_key"] == SECRET and encoded["hosts"] == ["http://127.0.0.1:9200"]
    assert "ssl_context" not in encoded
    pair = ElasticsearchConnection(api_key_id="id1", api_key=SECRET, cloud_id="dep:abc").client_kwargs()  # type: ignore[arg-type]
    assert pair["api_key"] == ("id1", SECRET) and pair["cloud_id"] == "dep:abc" and "hosts" not in pair
    assert isinstance(pair["ssl_context"], ssl.SSLContext)  # Elastic Cloud is always https


def test_elasticsearch_fingerprint_is_normalized() -> None:
    digits = "AB:" * 31 + "CD"
    kwargs = ElasticsearchConnection.model_validate(
        {"url": "https://es:9200", "tls": {"ssl_assert_fingerprint": digits}}
    ).client_kwargs()
    assert kwargs["ssl_assert_fingerprint"] == ("ab" * 31 + "cd")
    assert "ssl_context" not in kwargs


def test_elasticsearch_nodes_of_one_cluster() -> None:
    connection = ElasticsearchConnection.model_validate({"url": "https://es1:9200, https://es2:9200"})
    assert connection.urls == ["https://es1:9200", "https://es2:9200"] and connection.https
    assert connection.client_kwargs()["hosts"] == connection.urls


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("{username: elastic}", "username and password (or password_file) go together"),
        (f"{{username: e, password: p, api_key: {SECRET}}}", "not both"),
        ("{url: 'http://es:9200', tls: {}}", "use https://"),
        (f"{{url: 'https://elastic:{SECRET}@es:9200'}}", "credentials do not belong in the url"),
        ("{cloud_id: 'a:b', url: 'https://es:9200'}", "give url or cloud_id"),
        ("{url: 'https://es:9200', tls: {ssl_assert_fingerprint: 'abc'}}", "64 hex digits"),
        ("{api_key_id: x}", "api_key_id needs api_key"),
        ("{url: 'http://es1:9200,es2:9200'}", "not 'es2:9200' (several nodes: separated by commas)"),
        ("{url: 'http://es1:9200,https://es2:9200'}", "all https://, not both"),
    ],
)
def test_elasticsearch_settings_that_do_not_fit(section: str, expected: str) -> None:
    text = problems(collector_yaml(f"elasticsearch: {section}\n"))
    assert "elasticsearch" in text and expected in text
    assert SECRET not in text


def test_cli_connection_from_file_and_environment(tmp_path: Path, ca: Authority) -> None:
    collector = tmp_path / "collector.yaml"
    collector.write_text(
        collector_yaml(
            f"elasticsearch:\n  url: https://es:9200\n  replicas: 0\n  tls: {{ca_file: {ca.ca_file}}}\n"
        )
    )
    (tmp_path / "pw").write_text(SECRET + "\n")
    connection = load_connection(
        None,
        collector,
        {"ELASTICSEARCH_USERNAME": "reader", "ELASTICSEARCH_PASSWORD_FILE": str(tmp_path / "pw")},
    )
    assert connection.client_kwargs()["basic_auth"] == ("reader", SECRET)
    assert connection.tls is not None and connection.tls.ca_file == ca.ca_file
    assert load_connection("https://other:9200", collector, {}).url == "https://other:9200"
    with pytest.raises(ConfigError) as caught:
        load_connection(None, None, {"ELASTICSEARCH_PASSWORD": SECRET})
    assert "elasticsearch: " in str(caught.value) and SECRET not in str(caught.value)


def test_cli_config_error_exits_2_without_the_secret(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["logs", "--elasticsearch-url", "https://es:9200"], env={"ELASTICSEARCH_API_KEY_ID": SECRET}
    )
    assert result.exit_code == 2
    assert "api_key_id needs api_key" in result.output


# --- Jaeger (gRPC) -------------------------------------------------------------------------------


def test_jaeger_metadata_and_masking(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(SECRET + "\n")
    config = JaegerSinkConfig.model_validate(
        {"bearer_token_file": tmp_path / "token", "headers": {"x-scope-orgid": "tenant-1"}}
    )
    assert config.metadata() == (("x-scope-orgid", "tenant-1"), ("authorization", f"Bearer {SECRET}"))
    assert SECRET not in repr(config)


def test_jaeger_header_names_are_grpc_metadata_keys() -> None:
    text = problems(collector_yaml("jaeger: {headers: {Authorization: x}}\n"))
    assert "jaeger.headers" in text and "lower case" in text
    both = problems(collector_yaml("jaeger: {bearer_token: t, headers: {authorization: x}}\n"))
    assert "both set the authorization header" in both


def test_agent_validate_names_a_key_that_is_not_the_certificates(tmp_path: Path, ca: Authority) -> None:
    client, other = ca.issue("client", client=True), ca.issue("other", client=True)
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"data_dir: {tmp_path}\nkafka:\n  bootstrap_servers: k:9093\n  security_protocol: SASL_SSL\n"
        f"  tls: {{ca_file: {ca.ca_file}, cert_file: {client.cert_file}, key_file: {other.key_file}}}\n"
        f"  sasl: {{mechanism: PLAIN, username: agent, password: {SECRET}}}\n"
    )
    result = CliRunner().invoke(app, ["agent", "validate", "--config", str(config)])
    assert result.exit_code == 2
    assert (
        "kafka.tls: " in result.output
        and f"key_file: {other.key_file} is not the private key" in result.output
    )
    assert SECRET not in result.output


def test_cli_reads_the_connection_file_and_checks_it(tmp_path: Path) -> None:
    missing = CliRunner().invoke(
        app, ["trace", "0" * 31 + "1", "--elasticsearch-config", str(tmp_path / "no")]
    )
    assert missing.exit_code == 2 and "does not" in " ".join(missing.output.split())
    config = tmp_path / "reader.yaml"
    config.write_text(f"elasticsearch:\n  url: https://es:9200\n  tls: {{ca_file: {tmp_path}/ca.pem}}\n")
    result = CliRunner().invoke(app, ["logs", "--elasticsearch-config", str(config)])
    assert result.exit_code == 2
    assert "elasticsearch.tls.ca_file: Value error, no such file" in result.output
