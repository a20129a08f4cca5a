"""The form example under Xvfb: fields fill in while the JSON answer streams.

The fake server holds the answer (``Stall``) in the middle of a string, so the
form must show a prefix of the final value before the answer ends; then the
validated ``result.parsed`` fills it, and an invalid answer shows its error.
The loops wait for Tk events, bounded by a timer in case of a hang.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

from ollama_stream_sync import OutputValidationError, StreamingClient
from ollama_stream_sync.testing import Chunk, Delay, DoneLine, FakeOllama, Stall, reply

from .support.gui import load, tk_run_until, tk_shows_whole, too_long_for_a_line


@pytest.fixture
def tk_form(examples_path: None) -> ModuleType:
    return load("tk_form")


@pytest.fixture
def app(
    tk_form: ModuleType, server: FakeOllama, tk_root: Any
) -> Iterator[tuple[Any, Callable[[Callable[[], bool]], None]]]:
    client = StreamingClient(server.url)
    form = tk_form.FormApp(tk_root, client, "m")

    def run_until(condition: Callable[[], bool]) -> None:
        assert tk_run_until(tk_root, condition)

    try:
        yield form, run_until
    finally:
        form.dispatcher.close()
        client.close()


def fields(form: Any) -> dict[str, str]:
    return {name: var.get() for name, var in form.values.items()}


def test_the_form_fills_as_the_answer_streams_then_shows_the_validated_value(
    app: tuple[Any, Callable[[Callable[[], bool]], None]],
    server: FakeOllama,
    tk_form: ModuleType,
) -> None:
    form, run_until = app
    server.enqueue(
        [
            Chunk(content='{"city": "Par'),
            Stall(),  # held in the middle of a string
            Chunk(content='is", "temp_c": 18.5, "conditions": "light rain", '),
            Chunk(content='"notes": ["Take an umbrella.", "Wind'),
            Stall(),  # held in the middle of the list's second item
            Chunk(content=' from the west."]}'),
            DoneLine(),
        ]
    )
    form.fill_button.invoke()
    assert str(form.fill_button["state"]) == "disabled"
    run_until(lambda: fields(form)["city"] == "Par")
    assert fields(form) == {"city": "Par", "temp_c": "", "conditions": ""}
    assert server.wait_stalled()
    server.release()

    run_until(lambda: form.notes_shown() == ["Take an umbrella.", "Wind"])
    assert fields(form) == {
        "city": "Paris",
        "temp_c": "18.5",
        "conditions": "light rain",
    }
    assert form.last_result is None  # still streaming
    assert server.wait_stalled()  # the second stall: the first one has passed
    server.release()

    run_until(lambda: form.last_result is not None)
    assert form.last_result is not None
    weather = form.last_result.parsed
    assert weather == tk_form.Weather(
        city="Paris",
        temp_c=18.5,
        conditions="light rain",
        notes=["Take an umbrella.", "Wind from the west."],
    )
    assert fields(form) == {
        "city": weather.city,
        "temp_c": tk_form.shown(weather.temp_c),
        "conditions": weather.conditions,
    }
    assert form.notes_shown() == weather.notes
    assert str(form.status.cget("text")) == "A valid Weather for Paris."
    assert str(form.fill_button["state"]) == "normal"
    (request,) = server.stream_requests()
    assert request.body["format"] == tk_form.Weather.model_json_schema()
    assert request.body["messages"][-1] == {
        "role": "user",
        "content": "Weather in Paris?",
    }


def test_an_invalid_answer_shows_the_validation_error(
    app: tuple[Any, Callable[[Callable[[], bool]], None]], server: FakeOllama
) -> None:
    form, run_until = app
    server.enqueue(
        reply(
            '{"city": "Paris", "temp_c": "mild", "conditions": "cloudy", "notes": []}'
        )
    )
    form.fill_button.invoke()
    run_until(lambda: form.last_error is not None)
    assert isinstance(form.last_error, OutputValidationError)
    status = str(form.status.cget("text"))
    assert status.startswith("Invalid answer: the answer is not valid Weather")
    # Wider than the window: it wraps, and all of it is seen.
    assert too_long_for_a_line(form.status)
    run_until(lambda: tk_shows_whole(form.status))
    assert fields(form)["temp_c"] == "mild"  # what streamed stays to be seen
    assert str(form.fill_button["state"]) == "normal"


def test_the_demo_answers_alternate_valid_and_invalid(tk_form: ModuleType) -> None:
    valid = "".join(
        step.content
        for step in tk_form.paced_answer(tk_form.VALID)
        if isinstance(step, Chunk) and step.content
    )
    assert tk_form.Weather.model_validate_json(valid).city == "Paris"
    script = tk_form.paced_answer(tk_form.INVALID)
    assert isinstance(script[0], Delay) and isinstance(script[-1], DoneLine)
    with pytest.raises(ValueError, match="temp_c"):
        tk_form.Weather.model_validate(tk_form.INVALID)
