"""Kafka: the relay that publishes the log, and the Kafka-fed projection worker."""
