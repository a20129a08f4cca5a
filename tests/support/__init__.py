"""Helpers that start real programs for the tests (see ``network.py``)."""
