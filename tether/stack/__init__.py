"""The local development stack: real Kafka, Elasticsearch and Jaeger on 127.0.0.1.

Everything is provisioned from package registries (Maven Central, the Go module proxy)
into a cache directory and supervised by pid, so `down` stops exactly what `up` started.
`SecureStack` is the same servers with TLS and authentication on, on other ports (`--secure`).
`ClusterStack` is three Kafka brokers and two Elasticsearch nodes, on other ports (`--cluster`).
"""

from tether.stack.cluster import ClusterStack, ClusterStackConfig
from tether.stack.manager import Stack, StackConfig
from tether.stack.secure import SecureStack, SecureStackConfig

__all__ = ["ClusterStack", "ClusterStackConfig", "SecureStack", "SecureStackConfig", "Stack", "StackConfig"]
