"""Moved to ``tests/support/sockets.py``; kept for test_fake_server.py and
test_fake_inference.py (another branch's), until they import from there."""

from .support.sockets import Tarpit, raw_exchange

__all__ = ["Tarpit", "raw_exchange"]
