"""The tether agent: one per host. Tails JSON log files and receives OTLP, produces to Kafka."""
