"""What was measured, kept and shown: the append-only store (JSON lines + SQLite index), the OONI
measurement format it writes, and the tables and JSON lines the commands print."""
