"""Kizuna identity: one customer id across every site and channel."""
