"""The RabbitMQ adapters (pika): topology and failure handling, the relay that publishes the
outbox, and the republishing of history."""
