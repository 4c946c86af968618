"""Ledger storage: SQLite (default) and PostgreSQL behind one interface (`LedgerStore`)."""
