"""Domain events on NATS JetStream."""
