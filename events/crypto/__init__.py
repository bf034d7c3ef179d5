"""AES-256-GCM for personal data (`events.personal`), from the `cryptography` package."""
