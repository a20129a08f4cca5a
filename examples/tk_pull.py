"""A Tk window that pulls a model: its name, Pull, a progress bar, speed, ETA, Cancel.

Run: python examples/tk_pull.py [--host URL] [--model NAME]
Without --host it starts the built-in fake Ollama, whose pulls are paced so that
Cancel can be pressed mid-download. Callbacks run on Tk's thread through
TkDispatcher; coalescing keeps repaints to about ten a second however fast the
server reports.
"""

from __future__ import annotations

import argparse
import tkinter as tk
from tkinter import ttk

from pull_demo_server import ollama_host

from ollama_stream_sync import (
    ModelNotFound,
    ModelResult,
    Progress,
    ProgressHandle,
    StreamError,
    StreamingClient,
    TkDispatcher,
)

STAGES = {
    "manifest": "Fetching the manifest",
    "downloading": "Downloading",
    "verifying": "Verifying",
    "writing": "Writing the manifest",
    "cleanup": "Removing unused layers",
    "success": "Done",
}


def size(count: float) -> str:
    """Bytes in decimal units, as Ollama shows them: "1.2 GB"."""
    units = ["B", "KB", "MB", "GB"]
    while count >= 1000 and len(units) > 1:
        count /= 1000
        units.pop(0)
    return f"{count:.0f} B" if units[0] == "B" else f"{count:.1f} {units[0]}"


def clock(seconds: float) -> str:
    """A time left as minutes and seconds: "1:05"."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02}"


class PullApp:
    """The window; everything here runs on Tk's thread."""

    def __init__(self, root: tk.Tk, client: StreamingClient, model: str) -> None:
        self.root = root
        self.client = client
        self.dispatcher = TkDispatcher(root)
        self.handle: ProgressHandle | None = None
        self.last_result: ModelResult | None = None
        self.last_error: StreamError | None = None
        self.percent = 0
        root.title("ollama-stream-sync · pull")
        root.minsize(520, 130)  # and taller when the status needs more lines

        row = ttk.Frame(root)
        row.pack(fill="x", padx=8, pady=(8, 4))
        ttk.Label(row, text="Model:").pack(side="left")
        self.model = ttk.Entry(row)
        self.model.insert(0, model)
        self.model.pack(side="left", fill="x", expand=True, padx=6)
        self.model.bind("<Return>", lambda _: self.pull())
        self.pull_button = ttk.Button(row, text="Pull", command=self.pull)
        self.pull_button.pack(side="left")
        self.cancel_button = ttk.Button(
            row, text="Cancel", command=self.cancel, state="disabled"
        )
        self.cancel_button.pack(side="left", padx=(6, 0))

        self.bar = ttk.Progressbar(root, maximum=100)
        self.bar.pack(fill="x", padx=8, pady=4)
        figures = ttk.Frame(root)
        figures.pack(fill="x", padx=8)
        self.stage = ttk.Label(figures, text="", anchor="w")
        self.stage.pack(side="left")
        self.eta = ttk.Label(figures, text="", anchor="e", width=10)
        self.eta.pack(side="right")
        self.speed = ttk.Label(figures, text="", anchor="e", width=12)
        self.speed.pack(side="right")
        self.status = ttk.Label(root, text="Ready.", anchor="w")
        self.status.pack(fill="x", padx=8, pady=(4, 8))
        # A long message wraps at the window's edge rather than being cut off.
        self.status.bind(
            "<Configure>", lambda e: self.status.configure(wraplength=e.width)
        )

    def pull(self) -> None:
        name = self.model.get().strip()
        if not name or self.handle is not None:
            return
        self.bar["value"] = self.percent = 0
        self.stage.configure(text="Connecting…")
        self.speed.configure(text="")
        self.eta.configure(text="")
        self.status.configure(text=f"Pulling {name}…")
        self.pull_button.configure(state="disabled")
        self.cancel_button.configure(state="normal")
        self.handle = self.client.start_pull(
            name,
            on_progress=self.show,
            on_done=self._on_done,
            on_error=self._on_error,
            dispatcher=self.dispatcher,
            coalesce_interval=0.1,
        )

    def show(self, progress: Progress) -> None:
        """One repaint with the latest figures (``Progress.fraction`` never goes
        back, even when a new layer grows the total)."""
        if progress.fraction is not None:
            self.percent = int(progress.fraction * 100)
            self.bar["value"] = progress.fraction * 100
        stage = STAGES.get(progress.stage, progress.status)
        if progress.total:
            stage += f": {size(progress.completed)} of {size(progress.total)}"
        self.stage.configure(text=stage)
        speed, eta = progress.bytes_per_second, progress.eta
        self.speed.configure(text="speed n/a" if speed is None else f"{size(speed)}/s")
        self.eta.configure(text="" if eta is None else f"ETA {clock(eta)}")

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()

    def _finish(self) -> None:
        self.handle = None
        self.pull_button.configure(state="normal")
        self.cancel_button.configure(state="disabled")
        self.speed.configure(text="")
        self.eta.configure(text="")

    def _on_done(self, result: ModelResult) -> None:
        self.last_result = result
        self._finish()
        if result.cancelled:
            self.status.configure(
                text=f"Cancelled at {self.percent}%. Pull again to resume: "
                "Ollama keeps what it downloaded."
            )
        else:
            self.status.configure(
                text=f"Pulled {result.model} in {result.seconds:.1f} s."
            )

    def _on_error(self, error: StreamError) -> None:
        self.last_error = error
        self._finish()
        self.stage.configure(text="")
        if isinstance(error, ModelNotFound):
            text = f"No model {error.model!r} to pull ({error.message})."
        else:
            text = f"Error: {error.message}"
        self.status.configure(text=text)

    def close(self) -> None:
        self.cancel()
        self.dispatcher.close()
        self.root.destroy()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--model", default="llama3.2")
    args = parser.parse_args()
    with ollama_host(args.host, args.model) as host, StreamingClient(host) as client:
        root = tk.Tk()
        app = PullApp(root, client, args.model)
        root.protocol("WM_DELETE_WINDOW", app.close)
        root.mainloop()


if __name__ == "__main__":
    main()
