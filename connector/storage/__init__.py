"""Durable state: inbox, outbox, timers, poll cursors, deal snapshots and the audit."""
