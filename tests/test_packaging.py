"""What we publish: the wheel holds the package alone; the sdist runs its own tests.

Builds the sdist and the wheel from a copy of the source tree, checks what each
holds, then unpacks the sdist, installs what it builds with its test extra in a
fresh venv and runs pytest there: the whole suite collected (conftest, helpers
and fixtures ship) and a few tests that use the fixtures, an example, the demo
and the pytest plugin. Those are slow (they install from the package index),
so marked ``slow``; CI runs them.
The README is the package index's page: its links and its quick start are
checked here too.
"""

from __future__ import annotations

import email
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from ollama_stream_sync.testing import FakeOllama, reply

pytestmark = pytest.mark.xdist_group("packaging")  # one build, in one process
ROOT = Path(__file__).resolve().parent.parent
STEP_TIMEOUT = 600  # bounds one build or install; it measures nothing
SUBSET = [
    "tests/test_state.py",  # the recorded fixtures
    "tests/test_examples.py::test_demo_streams_thinking_tool_call_and_answer",
    "tests/test_examples.py::test_basic_chat_example_keeps_history",
    "tests/test_api.py::test_fake_ollama_fixture_from_the_plugin",
]
"""What the unpacked sdist runs: tests that need its fixtures, an example, the
demo and the pytest plugin (the whole suite is collected, not run)."""
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", ".*_cache"
)


def run(args: list[str], cwd: Path) -> str:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "REQUIRE_GUI_TESTS")
    }
    done = subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


LINKS = re.compile(r"\]\(([^)]+)\)")


def need(tool: str) -> None:
    """Skip without a dev tool locally; in CI (which installs them) fail instead."""
    if importlib.util.find_spec(tool) is None:
        reason = f"the {tool!r} package is missing (pip install -e '.[dev]')"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel built from it, as ``python -m build`` makes them."""
    need("build")
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = work / "dist"
    run([sys.executable, "-m", "build", "--outdir", str(out), str(source)], work)
    return out


def only(folder: Path, pattern: str) -> Path:
    (found,) = folder.glob(pattern)
    return found


@pytest.mark.slow
def test_wheel_holds_the_package_license_and_types_only(dist: Path) -> None:
    with zipfile.ZipFile(only(dist, "*.whl")) as wheel:
        names = wheel.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(wheel.read(info))
        entry_points = wheel.read(info.replace("METADATA", "entry_points.txt"))
    assert all(n.startswith("ollama_stream_sync") for n in names), names
    assert "ollama_stream_sync/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "examples/", "docs/")) for n in names)
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    classifiers = metadata.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert "Framework :: Pytest" in classifiers
    urls = metadata.get_all("Project-URL") or []
    assert any(u.startswith("Repository, https://") for u in urls)
    assert b"ollama-stream-sync = ollama_stream_sync._cli:main" in entry_points
    description = metadata.get_payload()
    assert isinstance(description, str) and description.startswith("# ollama-stream")


@pytest.mark.slow
def test_the_package_index_accepts_and_renders_both(dist: Path) -> None:
    """twine's check: valid metadata, and a README the index can render."""
    need("twine")
    files = [str(f) for f in sorted(dist.iterdir())]
    out = run([sys.executable, "-m", "twine", "check", "--strict", *files], dist)
    assert out.count("PASSED") == 2, out


@pytest.mark.slow
def test_sdist_runs_its_own_tests(dist: Path, tmp_path: Path) -> None:
    with tarfile.open(only(dist, "*.tar.gz")) as sdist:
        names = sdist.getnames()
        sdist.extractall(tmp_path, filter="data")
    top = names[0].split("/")[0]
    shipped = {n.split("/", 1)[1] for n in names if "/" in n}
    for needed in (
        "LICENSE",
        "tests/conftest.py",
        "tests/support/clients.py",
        "tests/fixtures/chat_thinking_tools.ndjson",
        "examples/basic_chat.py",
        "docs/tk_chat.png",
    ):
        assert needed in shipped, needed
    assert not any("__pycache__" in n for n in names)

    tree = tmp_path / top
    # A venv without its own pip (ensurepip takes seconds); this pip installs
    # into it the wheel that python -m build made from this sdist, with the
    # test extra: what `pip install .[test]` in the tree would build.
    run([sys.executable, "-m", "venv", "--without-pip", str(tree / "venv")], tree)
    python = str(tree / "venv" / "bin" / "python")
    wheel = f"{only(dist, '*.whl')}[test]"
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel], tree)
    pytest_args = [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "0"]
    collected = run([*pytest_args, "--collect-only"], tree)
    assert "test_cli.py" in collected and "test_packaging.py" in collected
    ran = run([*pytest_args, *SUBSET], tree)
    assert " passed" in ran and "failed" not in ran


# -- the README, which is the package index's page -------------------------------------


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_links_are_absolute() -> None:
    """Relative links and images break on the package index's page."""
    relative = [
        link
        for link in LINKS.findall(readme())
        if not link.startswith(("https://", "http://", "#"))
    ]
    assert relative == []


def test_readme_describes_the_project_before_the_install_commands() -> None:
    text = readme()
    first_command = text.index("```sh")
    assert "Stream [Ollama](https://ollama.com)" in text[:first_command]


def test_readme_quick_start_prints_thinking_then_answer(tmp_path: Path) -> None:
    text = readme()
    quick_start = text[text.index("## Quick start") : text.index("## Command line")]
    found = re.search(r"```python\n(.*?)```", quick_start, re.DOTALL)
    assert found is not None
    with FakeOllama(models=["qwen3"]) as server:
        server.enqueue(reply("391.", thinking="17 x 20 + 17 x 3.", mixed_switch=True))
        done = subprocess.run(
            [sys.executable, "-c", found.group(1)],
            env={**os.environ, "OLLAMA_HOST": server.url},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "\nThinking:\n17 x 20 + 17 x 3.\nAnswer:\n391.\n"
