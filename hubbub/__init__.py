"""Hubbub's shared domain: what every component agrees on, with no I/O of its own.

The envelope and event shapes, topic names, the ID generator, access tokens, the
store Protocols and the error tree live here once, so the broker plugins, the API,
the persister and the notifier cannot drift apart.
"""
