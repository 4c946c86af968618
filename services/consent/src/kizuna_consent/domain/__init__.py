"""The consent ledger's pure core: statements, chained records, Merkle tree, checkpoints, state.

Nothing here does I/O; storage, gRPC and NATS build on these values and rules.
"""
