"""Shared below the domain: error kinds, HTML, the Matrix connection, background tasks, the event
envelope, ids and the namespace test, and the protocols (ports) the domain needs from outside.

core/ imports db/ at most; everything above may import core/.
"""
