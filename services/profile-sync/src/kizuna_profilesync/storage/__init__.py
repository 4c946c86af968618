"""Profile-sync storage: SQLite (default) and PostgreSQL behind one interface (`SyncStore`)."""
