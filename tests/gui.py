"""Moved to ``tests/support/gui.py``; kept for test_docs.py (another branch's),
until it imports from there."""

from .support.gui import tk_run_until

__all__ = ["tk_run_until"]
