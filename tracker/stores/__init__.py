"""State of the coordinator behind Protocols: SQLite (embedded default) and Redis."""
