"""The local stack: PostgreSQL, NATS, an IPFS node, Synapse and the appservice on 127.0.0.1.

One implementation, used by `unityplan dev`, the test fixtures and the benchmarks.
"""
