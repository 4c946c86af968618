"""Shared plumbing of the Kizuna services: nothing here knows a customer or a consent."""
