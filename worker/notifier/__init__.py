"""`assessments notifier`: mails each candidate whose key was issued with an email their
invitation, exactly once per key.

A downstream consumer of the service's own events, built the way a team would build theirs: a
durable queue of its own bound to `candidate_key.issued` (`consumer`), an idempotency table in
the database it reads (`events.sql.invitations`), acks only after that table recorded the
outcome, and a dead-letter queue for what can never be sent. `invitations` applies the rules
to one key; `mail` builds the message from templates; `sending` speaks SMTP (or writes .eml
files in `assessments dev`).
"""
