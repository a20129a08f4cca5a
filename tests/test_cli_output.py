"""What the command line writes, without a process: word wrapping, error lines."""

from __future__ import annotations

import io

import pytest

from ollama_stream_sync import (
    ConnectionFailed,
    ModelNotFound,
    ServerError,
    StreamError,
    StreamTimeout,
)
from ollama_stream_sync._cli._failure import explain
from ollama_stream_sync._cli._render import StreamWrapper

URL = "http://h:1"


def render(raw: str) -> str:
    """What a terminal shows for ``raw``: backspaces move left, text overwrites."""
    lines: list[list[str]] = [[]]
    column = 0
    for char in raw:
        line = lines[-1]
        if char == "\n":
            lines.append([])
            column = 0
        elif char == "\b":
            column = max(0, column - 1)
        else:
            if column < len(line):
                line[column] = char
            else:
                line.append(char)
            column += 1
    return "\n".join("".join(line).rstrip() for line in lines)


def wrap(pieces: list[str], width: int) -> str:
    sink = io.StringIO()
    wrapper = StreamWrapper(sink, width)
    for i, piece in enumerate(pieces):
        wrapper.write(piece)
        # Every character is on the screen as soon as it arrives.
        shown, sent = render(sink.getvalue()), "".join(pieces[: i + 1])
        assert "".join(shown.split()) == "".join(sent.split())
    wrapper.newline()
    return render(sink.getvalue())


def test_wrapper_never_splits_a_word_that_arrives_in_pieces() -> None:
    # 17 columns: lines of at most 16, so the cursor never waits at the edge.
    text = wrap(["It is 18 °C, take an umbr", "el", "la and go", " out."], 17)
    assert text == "It is 18 °C,\ntake an umbrella\nand go out.\n"


def test_wrapper_moves_a_word_already_shown_when_it_outgrows_the_line() -> None:
    assert wrap(["ab cdef", "gh", "ijk", "lmnop q"], 12) == "ab\ncdefghijklm\nnop q\n"


def test_wrapper_keeps_line_breaks_and_indentation() -> None:
    text = wrap(["def f():\n    ret", "urn 1\n\nok"], 40)
    assert text == "def f():\n    return 1\n\nok\n"


def test_wrapper_cuts_a_word_longer_than_the_line() -> None:
    assert wrap(["see https://example.org/abcdef"], 11) == (
        "see\nhttps://ex\nample.org/\nabcdef\n"
    )


def test_wrapper_counts_wide_characters_as_two_columns() -> None:
    assert wrap(["日本語 日本語"], 8) == "日本語\n日本語\n"


def test_wrapper_of_width_zero_writes_straight_through() -> None:
    assert wrap(["a  b", "\nc"], 0) == "a  b\nc\n"


@pytest.mark.parametrize(
    ("error", "added"),
    [
        (
            ConnectionFailed("refused\n(twice)", during_connect=True, url=URL),
            " (on the command line: --host URL)",
        ),
        (
            ModelNotFound("model 'm' not found", status_code=404, url=URL),
            " (or choose another with --model NAME)",
        ),
        (StreamTimeout("no first token in 300 s", which="first_token", url=URL), ""),
        (ServerError('"m" does not support thinking', status_code=400, url=URL), ""),
    ],
)
def test_an_error_is_said_once_in_its_own_words_plus_the_flag(
    error: StreamError, added: str
) -> None:
    own = " ".join(str(error).split())  # on one line, the library's advice in it
    assert explain(error) == own + added
    assert URL in own and explain(error).count("ollama serve") <= 1
