"""The tether collector: a Kafka consumer group that correlates logs with spans and indexes them."""
