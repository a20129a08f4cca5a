"""A Tk form that fills in while the model's JSON answer streams (format=, on_partial).

Run: python examples/tk_form.py [--host URL --model NAME]
Ask "Weather in Paris?" and press Fill. The model must answer as JSON for the
pydantic model ``Weather``; each field shows its value as it streams
(``on_partial`` gets the answer parsed so far), and at the end the validated
``result.parsed`` fills the form, or the validation error shows in the status
line. Without --host the built-in fake Ollama answers slowly, validly and then
invalidly in turn.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tkinter as tk
from collections.abc import Iterator
from tkinter import ttk
from typing import Any

from pydantic import BaseModel

from ollama_stream_sync import (
    ChatResult,
    OutputValidationError,
    StreamError,
    StreamHandle,
    StreamingClient,
    TkDispatcher,
)
from ollama_stream_sync.testing import Chunk, Delay, DoneLine, FakeOllama, Script


class Weather(BaseModel):
    """What the form holds; its JSON schema is the request's ``format``."""

    city: str
    temp_c: float
    conditions: str
    notes: list[str]


FIELDS = {"city": "City", "temp_c": "Temperature (°C)", "conditions": "Conditions"}
SYSTEM = (
    "Answer with the current weather as JSON: the city, its temperature in "
    "degrees Celsius, the conditions in a few words, and two or three short notes."
)


def shown(value: Any) -> str:
    """A field's value as the form shows it: 18.0 as "18", text as it is."""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return f"{value:g}"
    return str(value)


class FormApp:
    """The window; everything here runs on Tk's thread."""

    def __init__(self, root: tk.Tk, client: StreamingClient, model: str) -> None:
        self.root = root
        self.client = client
        self.model = model
        self.dispatcher = TkDispatcher(root)
        self.handle: StreamHandle | None = None
        self.last_result: ChatResult | None = None
        self.last_error: StreamError | None = None
        root.title("ollama-stream-sync · form")
        root.minsize(460, 250)  # and taller when the status needs more lines

        row = ttk.Frame(root)
        row.pack(fill="x", padx=8, pady=8)
        self.question = ttk.Entry(row)
        self.question.insert(0, "Weather in Paris?")
        self.question.pack(side="left", fill="x", expand=True)
        self.question.bind("<Return>", lambda _: self.fill())
        self.fill_button = ttk.Button(row, text="Fill", command=self.fill)
        self.fill_button.pack(side="left", padx=(6, 0))

        form = ttk.Frame(root)
        form.pack(fill="both", expand=True, padx=8)
        form.columnconfigure(1, weight=1)
        self.values = {name: tk.StringVar() for name in FIELDS}
        for line, (name, label) in enumerate(FIELDS.items()):
            ttk.Label(form, text=label).grid(
                row=line, column=0, sticky="w", padx=(0, 8)
            )
            entry = ttk.Entry(form, textvariable=self.values[name], state="readonly")
            entry.grid(row=line, column=1, sticky="ew", pady=2)
        ttk.Label(form, text="Notes").grid(row=len(FIELDS), column=0, sticky="nw")
        self.notes = tk.Listbox(form, height=4)
        self.notes.grid(row=len(FIELDS), column=1, sticky="nsew", pady=2)
        form.rowconfigure(len(FIELDS), weight=1)
        self.status = ttk.Label(root, text="Ready.", anchor="w")
        self.status.pack(fill="x", padx=8, pady=8)
        # A long message wraps at the window's edge rather than being cut off.
        self.status.bind(
            "<Configure>", lambda e: self.status.configure(wraplength=e.width)
        )

    def fill(self) -> None:
        question = self.question.get().strip()
        if not question or self.handle is not None:
            return
        for value in self.values.values():
            value.set("")
        self.notes.delete(0, "end")
        self.fill_button.configure(state="disabled")
        self.status.configure(text="Filling in as the answer streams…")
        self.handle = self.client.start_chat(
            self.model,
            [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question},
            ],
            format=Weather,
            on_partial=self.show,
            on_done=self._on_done,
            on_error=self._on_error,
            dispatcher=self.dispatcher,
            coalesce_interval=0.05,
        )

    def show(self, value: Any) -> None:
        """Put what the answer holds so far into the form (a dict as it grows)."""
        if not isinstance(value, dict):
            return
        for name, var in self.values.items():
            if name in value:
                var.set(shown(value[name]))
        notes = value.get("notes")
        if isinstance(notes, list):
            self.notes.delete(0, "end")
            self.notes.insert("end", *(shown(note) for note in notes))

    def notes_shown(self) -> list[str]:
        return [str(item) for item in self.notes.get(0, "end")]

    def _finish(self) -> None:
        self.handle = None
        self.fill_button.configure(state="normal")

    def _on_done(self, result: ChatResult) -> None:
        self.last_result = result
        self._finish()
        weather = result.parsed
        if not isinstance(weather, Weather):  # cancelled: nothing was validated
            self.status.configure(text="Stopped.")
            return
        self.show(weather.model_dump())
        self.status.configure(text=f"A valid Weather for {weather.city}.")

    def _on_error(self, error: StreamError) -> None:
        self.last_error = error
        self._finish()
        if isinstance(error, OutputValidationError):
            self.status.configure(text=f"Invalid answer: {error.message}")
        else:
            self.status.configure(text=f"Error: {error.message}")

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        self.dispatcher.close()
        self.root.destroy()


def paced_answer(answer: dict[str, Any], delay: float = 0.05) -> Script:
    """The answer's JSON a few characters at a time, as a model writes it."""
    text = json.dumps(answer, ensure_ascii=False)
    pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
    steps: Script = []
    for piece in pieces:
        steps += [Delay(delay), Chunk(content=piece)]
    return [*steps, DoneLine()]


VALID = {
    "city": "Paris",
    "temp_c": 18.5,
    "conditions": "light rain",
    "notes": ["Take an umbrella.", "Wind from the west.", "Clearer by evening."],
}
INVALID = {"city": "Paris", "temp_c": "mild", "conditions": "cloudy", "notes": []}


@contextlib.contextmanager
def ollama_host(host: str | None) -> Iterator[str]:
    """``host``, or a fake Ollama whose answers alternate: valid, then not."""
    if host:
        yield host
        return
    with FakeOllama() as server:
        for _ in range(10):
            server.enqueue(paced_answer(VALID), paced_answer(INVALID))
        yield server.url


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--model", default="qwen3")
    args = parser.parse_args()
    with ollama_host(args.host) as host, StreamingClient(host) as client:
        root = tk.Tk()
        app = FormApp(root, client, args.model)
        root.protocol("WM_DELETE_WINDOW", app.close)
        root.mainloop()


if __name__ == "__main__":
    main()
