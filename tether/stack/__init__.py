"""The local development stack: real Kafka, Elasticsearch and Jaeger on 127.0.0.1.

Everything is provisioned from package registries (Maven Central, the Go module proxy)
into a cache directory and supervised by pid, so `down` stops exactly what `up` started.
"""

from tether.stack.manager import Stack, StackConfig

__all__ = ["Stack", "StackConfig"]
