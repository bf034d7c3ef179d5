"""The core: events, the Assessment aggregate, the event store, the outbox and the relay.

Imports none of the service's other packages."""
