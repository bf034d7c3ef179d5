"""The PostgreSQL (production) and SQLite (`assessments dev`) adapters: engines, the event
store, the outbox, the catalogue, organisations and tokens. `dialect` is the one place that
chooses between the two databases' ways."""
