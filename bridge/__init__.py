"""Switchboard's core: visitors, conversations, advisors and the routing queue.

Nothing in this package talks to Matrix, HTTP or a database directly; it declares what it needs
as small ports (:mod:`bridge.ports`) that ``appservice`` and ``web_portal`` implement.
"""
