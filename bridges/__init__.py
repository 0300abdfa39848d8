"""Bridges: forum (rooms <-> topics), media (room files <-> IPFS), events (domain events <-> NATS)."""
