"""A Tk chat window: Send and Stop, thinking shown apart in grey, history kept.

Run: python examples/tk_chat.py [--host URL --model NAME]
Without --host it starts the built-in fake Ollama. Callbacks run on Tk's thread
through TkDispatcher; coalescing keeps repaints to tens per second; the status
line follows the stream's phase. Closing the window mid-stream is clean: the
dispatcher closes with it and stops the stream.
"""

from __future__ import annotations

import argparse
import tkinter as tk
from tkinter import ttk

from gui_demo_server import ollama_host

from ollama_stream_sync import (
    ChatResult,
    Conversation,
    StreamError,
    StreamHandle,
    StreamingClient,
    TkDispatcher,
)

PHASES = {
    "connecting": "Connecting…",
    "waiting": "Waiting for the model…",
    "loading": "Loading the model…",
    "thinking": "Thinking…",
    "answering": "Answering…",
    "tool_call": "Calling a tool…",
    "retrying": "Retrying…",
}
"""Status text per phase; the final ones ("done", "cancelled", "failed") are
left to on_done and on_error, which add the figures or the error."""


class ChatApp:
    """The window; everything here runs on Tk's thread."""

    def __init__(self, root: tk.Tk, client: StreamingClient, model: str) -> None:
        self.root = root
        self.conversation = Conversation(client, model, think=True)
        self.dispatcher = TkDispatcher(root)
        self.handle: StreamHandle | None = None
        self.last_result: ChatResult | None = None
        self.answering = False
        root.title("ollama-stream-sync · Tk")
        root.geometry("640x420")

        self.transcript = tk.Text(root, wrap="word", height=16, state="disabled")
        self.transcript.tag_configure("user", font=("TkDefaultFont", 10, "bold"))
        self.transcript.tag_configure(
            "thinking", foreground="grey45", font=("TkDefaultFont", 9, "italic")
        )
        self.transcript.tag_configure("answer", foreground="black")
        self.transcript.pack(fill="both", expand=True, padx=6, pady=(6, 0))

        bar = ttk.Frame(root)
        bar.pack(fill="x", padx=6, pady=6)
        self.prompt = ttk.Entry(bar)
        self.prompt.pack(side="left", fill="x", expand=True)
        self.prompt.bind("<Return>", lambda _: self.send())
        self.send_button = ttk.Button(bar, text="Send", command=self.send)
        self.send_button.pack(side="left", padx=(6, 0))
        self.stop_button = ttk.Button(
            bar, text="Stop", command=self.stop, state="disabled"
        )
        self.stop_button.pack(side="left", padx=(6, 0))
        self.status = ttk.Label(root, text="Ready.", anchor="w")
        self.status.pack(fill="x", padx=6, pady=(0, 6))
        # A long message wraps at the window's edge rather than being cut off.
        self.status.bind(
            "<Configure>", lambda e: self.status.configure(wraplength=e.width)
        )

    def _write(self, text: str, tag: str) -> None:
        self.transcript.configure(state="normal")
        self.transcript.insert("end", text, tag)
        self.transcript.configure(state="disabled")
        self.transcript.see("end")

    def text_with_tag(self, tag: str) -> str:
        """All text shown with ``tag`` (what the tests compare with the result)."""
        ranges = self.transcript.tag_ranges(tag)
        return "".join(
            self.transcript.get(ranges[i], ranges[i + 1])
            for i in range(0, len(ranges), 2)
        )

    def send(self) -> None:
        text = self.prompt.get().strip()
        if not text or self.handle is not None:
            return
        self.prompt.delete(0, "end")
        self._write(f"\nYou: {text}\n", "user")
        self.answering = False
        self.send_button.configure(state="disabled")
        self.stop_button.configure(state="normal")
        self.status.configure(text="Sending…")
        self.handle = self.conversation.start_send(
            text,
            on_phase=self._on_phase,
            on_thinking=lambda t: self._write(t, "thinking"),
            on_content=self._on_content,
            on_done=self._on_done,
            on_error=self._on_error,
            dispatcher=self.dispatcher,
            coalesce_interval=0.03,
        )

    def _on_phase(self, phase: str) -> None:
        if phase in PHASES:
            self.status.configure(text=PHASES[phase])

    def _on_content(self, text: str) -> None:
        if not self.answering:  # the answer starts on its own line
            self.answering = True
            self._write("\n", "")
        self._write(text, "answer")

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()

    def _finish(self) -> None:
        self.handle = None
        self.send_button.configure(state="normal")
        self.stop_button.configure(state="disabled")

    def _on_done(self, result: ChatResult) -> None:
        self.last_result = result
        self._finish()
        # Either figure is None when there is nothing to measure: no output
        # yet, or a single chunk (a Stop early on, a one-word answer).
        ttft = result.time_to_first_token
        tps = result.tokens_per_second
        parts = ["Stopped." if result.cancelled else "Done."]
        if ttft is not None:
            parts.append(f"first token {ttft * 1000:.0f} ms")
        if tps is not None:
            parts.append(f"{tps:.1f} tokens/s")
        self.status.configure(text=" · ".join(parts))

    def _on_error(self, error: StreamError) -> None:
        self._finish()
        self.status.configure(text=f"Error: {error}")

    def close(self) -> None:
        """The window's close button: stop, then go (destroying the window
        closes the dispatcher, so nothing is delivered to dead widgets)."""
        self.stop()
        self.root.destroy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--model", default="qwen3")
    args = parser.parse_args()
    # Against a real Ollama, ask whether the model is loaded: "Loading the model…"
    probe = args.host is not None
    with (
        ollama_host(args.host) as host,
        StreamingClient(host, probe_loading=probe) as client,
    ):
        root = tk.Tk()
        app = ChatApp(root, client, args.model)
        root.protocol("WM_DELETE_WINDOW", app.close)
        root.mainloop()


if __name__ == "__main__":
    main()
