"""In-memory adapters: an event store and outbox for fast tests of the service's rules, and
the in-process broker of `assessments dev`."""
