"""Kizuna consent service: an append-only, tamper-evident, replayable consent ledger."""
