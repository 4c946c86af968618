"""The identity domain: aggregates and rules, no I/O."""
