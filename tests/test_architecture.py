"""The shape the library promises: small files, no import cycles, other
libraries' private parts in one module only, each pinned on the installed version."""

from __future__ import annotations

import ast
import re
import socket
import threading
from pathlib import Path

import httpx
import ollama
import urllib3

from ollama_stream_sync._transports import _compat

PACKAGE = Path(__file__).resolve().parent.parent / "ollama_stream_sync"
SOURCES = sorted(PACKAGE.rglob("*.py"))
PRIVATE_USES = re.compile(
    r"__class__\s*=|json\.scanner|(?<!from )\._client\b|_dns_host|_tunnel_host"
    r"|\.mutex\b|raw\._pool\b"
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, known: set[str]) -> set[str]:
    """The package modules ``path`` imports (relative or absolute)."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            for alias in node.names:
                name = f"{base}.{alias.name}"
                found.add(name if name in known else base)
    return (found & known) - {here}


def test_no_file_is_over_500_lines() -> None:
    long = {p.name: n for p in SOURCES if (n := len(p.read_text().splitlines())) > 500}
    assert not long


def test_no_module_imports_one_that_imports_it_back() -> None:
    known = {module_name(p) for p in SOURCES}
    graph = {module_name(p): imports(p, known) for p in SOURCES}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo += graph[node]
        return False

    cycles = [(a, b) for a, deps in graph.items() for b in deps if reaches(b, a)]
    assert not cycles


def test_private_parts_of_other_libraries_only_in_the_compat_module() -> None:
    offenders = [
        f"{p.relative_to(PACKAGE)}:{n}"
        for p in SOURCES
        if p.name != "_compat.py"
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if PRIVATE_USES.search(line.split("#")[0])
    ]
    assert not offenders


# -- each private use, pinned on the installed versions ----------------------


def test_the_sdk_still_keeps_its_httpx_client() -> None:
    with ollama.Client("http://127.0.0.1:1") as sdk:
        assert isinstance(_compat.sdk_http_client(sdk), httpx.Client)


def test_the_sdk_still_converts_functions_to_tools() -> None:
    def weather(city: str) -> str:
        """The weather in a city.

        Args:
            city: the city's name
        """
        return city

    tool = _compat.function_tool(weather)
    assert tool["function"]["name"] == "weather"
    assert "city" in tool["function"]["parameters"]["properties"]


def test_urllib3_still_makes_its_socket_in_new_conn() -> None:
    made = threading.Event()
    base = urllib3.connection.HTTPConnection

    class Watching(base):  # type: ignore[misc,valid-type]
        pass

    def new_conn(self: base) -> socket.socket:
        made.set()
        sock: socket.socket = getattr(base, _compat.NEW_CONN)(self)
        return sock

    setattr(Watching, _compat.NEW_CONN, new_conn)
    with socket.create_server(("127.0.0.1", 0)) as server:
        conn = Watching("127.0.0.1", server.getsockname()[1])
        conn.connect()
        conn.close()
    assert made.is_set()


def test_urllib3_pools_still_queue_idle_connections_under_a_mutex() -> None:
    pool = urllib3.HTTPConnectionPool("127.0.0.1", 1, maxsize=2)
    idle = pool._get_conn()  # a fresh connection, as a request would take it
    pool._put_conn(idle)
    _compat.drop_idle(pool, keep=type(None))
    assert all(conn is None for conn in pool.pool.queue)  # type: ignore[union-attr]
    pool.close()


def test_urllib3_responses_still_hold_their_pool() -> None:
    response = urllib3.HTTPResponse(body=b"", preload_content=False)
    assert hasattr(response, "_pool")
    _compat.forget_pool(response)
    assert response._pool is None


def test_the_architecture_page_names_every_module_once() -> None:
    """docs/architecture.md's table matches the code: each module in one row, and no
    row for a module that is gone (packages ``_cli/`` and ``testing/`` as a whole)."""
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    rows = [line.split("|")[1] for line in page.splitlines() if line.startswith("| `")]
    named = [name for row in rows for name in re.findall(r"`([^`]+)`", row)]
    modules = {
        "/".join(p.relative_to(PACKAGE).parts[:1]) + "/"
        if p.parent.name in ("_cli", "testing")
        else p.relative_to(PACKAGE).as_posix()
        for p in SOURCES
        if len(ast.parse(p.read_text()).body) > 1  # not a docstring alone
    }
    twice = sorted({name for name in named if named.count(name) > 1})
    unnamed, gone = sorted(modules - set(named)), sorted(set(named) - modules)
    assert (unnamed, gone, twice) == ([], [], [])
