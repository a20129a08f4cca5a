"""A throwaway certificate authority for ``FakeOllama(tls=True)``, made by trustme."""

from __future__ import annotations

import os
import shutil
import ssl
import tempfile
from typing import Any


class TLSMaterial:
    """A CA, a loopback certificate it signed, and the CA written to a file.

    The file lives in a private temporary directory until ``remove()``.
    """

    def __init__(self, hosts: tuple[str, ...]) -> None:
        try:
            import trustme  # noqa: PLC0415  # optional: only TLS tests need it
        except ImportError as exc:
            raise ImportError(
                "FakeOllama(tls=True) needs trustme: "
                "pip install 'ollama-stream-sync[test]' (or pip install trustme)"
            ) from exc
        self._ca: Any = trustme.CA()
        self._cert: Any = self._ca.issue_cert(*hosts)
        self._dir = tempfile.mkdtemp(prefix="fake-ollama-tls-")
        self.ca_file = os.path.join(self._dir, "ca.pem")
        self._ca.cert_pem.write_to_path(self.ca_file)

    def server_context(self) -> ssl.SSLContext:
        """The context the server wraps its connections with."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A new client context that trusts the CA (and verifies the host name)."""
        context = ssl.create_default_context()
        self._ca.configure_trust(context)
        return context

    def remove(self) -> None:
        """Delete the CA file and its directory."""
        shutil.rmtree(self._dir, ignore_errors=True)
