"""The bin daemon as a subprocess, for test files beyond test_daemon.py.

Re-exports ``test_daemon``'s fixtures (``clip``: three TrashNet items in a clip; ``daemons``:
start ``smartbin run`` processes, killed at teardown) so that other files use them by name
without importing fixtures into their own namespace.
"""

from test_daemon import clip, daemons

__all__ = ["clip", "daemons"]
