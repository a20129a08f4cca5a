"""The Tk pull window again, in PySide6: a model name, Pull, a bar, speed, ETA, Cancel.

Run: python examples/qt_pull.py [--host URL] [--model NAME]
Needs: pip install 'ollama-stream-sync[qt]'. Without --host it starts the
built-in fake Ollama, whose pulls are paced so that Cancel can be pressed
mid-download. Callbacks run on the Qt thread through QtDispatcher; coalescing
keeps repaints to about ten a second.
"""

from __future__ import annotations

import argparse
import sys

from pull_demo_server import ollama_host
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ollama_stream_sync import (
    ModelNotFound,
    ModelResult,
    Progress,
    ProgressHandle,
    QtDispatcher,
    StreamError,
    StreamingClient,
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


class PullWindow(QWidget):
    """The window; everything here runs on the Qt thread."""

    def __init__(self, client: StreamingClient, model: str) -> None:
        super().__init__()
        self.client = client
        self.dispatcher = QtDispatcher()
        self.handle: ProgressHandle | None = None
        self.last_result: ModelResult | None = None
        self.last_error: StreamError | None = None
        self.setWindowTitle("ollama-stream-sync · pull")
        self.resize(520, 130)

        self.model = QLineEdit(model)
        self.model.returnPressed.connect(self.pull)
        self.pull_button = QPushButton("Pull")
        self.pull_button.clicked.connect(self.pull)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)  # thousandths: the bar moves smoothly
        self.bar.setTextVisible(False)
        self.stage = QLabel("")
        self.speed = QLabel("")
        self.eta = QLabel("")
        self.status = QLabel("Ready.")

        row = QHBoxLayout()
        row.addWidget(QLabel("Model:"))
        row.addWidget(self.model)
        row.addWidget(self.pull_button)
        row.addWidget(self.cancel_button)
        figures = QHBoxLayout()
        figures.addWidget(self.stage, 1)
        figures.addWidget(self.speed)
        figures.addWidget(self.eta)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.bar)
        layout.addLayout(figures)
        layout.addWidget(self.status)

    @property
    def percent(self) -> int:
        return self.bar.value() // 10

    def pull(self) -> None:
        name = self.model.text().strip()
        if not name or self.handle is not None:
            return
        self.bar.setValue(0)
        self.stage.setText("Connecting…")
        self.speed.setText("")
        self.eta.setText("")
        self.status.setText(f"Pulling {name}…")
        self.pull_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.handle = self.client.start_pull(
            name,
            on_progress=self.show_progress,
            on_done=self._on_done,
            on_error=self._on_error,
            dispatcher=self.dispatcher,
            coalesce_interval=0.1,
        )

    def show_progress(self, progress: Progress) -> None:
        """One repaint with the latest figures (``Progress.fraction`` never goes
        back, even when a new layer grows the total)."""
        if progress.fraction is not None:
            self.bar.setValue(int(progress.fraction * 1000))
        stage = STAGES.get(progress.stage, progress.status)
        if progress.total:
            stage += f": {size(progress.completed)} of {size(progress.total)}"
        self.stage.setText(stage)
        speed, eta = progress.bytes_per_second, progress.eta
        self.speed.setText("speed n/a" if speed is None else f"{size(speed)}/s")
        self.eta.setText("" if eta is None else f"ETA {clock(eta)}")

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()

    def _finish(self) -> None:
        self.handle = None
        self.pull_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.speed.setText("")
        self.eta.setText("")

    def _on_done(self, result: ModelResult) -> None:
        self.last_result = result
        self._finish()
        if result.cancelled:
            self.status.setText(
                f"Cancelled at {self.percent}%. Pull again to resume: "
                "Ollama keeps what it downloaded."
            )
        else:
            self.status.setText(f"Pulled {result.model} in {result.seconds:.1f} s.")

    def _on_error(self, error: StreamError) -> None:
        self.last_error = error
        self._finish()
        self.stage.setText("")
        if isinstance(error, ModelNotFound):
            text = f"No model {error.model!r} to pull ({error.message})."
        else:
            text = f"Error: {error.message}"
        self.status.setText(text)

    def closeEvent(self, event: object) -> None:
        self.cancel()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--model", default="llama3.2")
    args = parser.parse_args()
    app = QApplication(sys.argv[:1])
    with ollama_host(args.host, args.model) as host, StreamingClient(host) as client:
        window = PullWindow(client, args.model)
        window.show()
        return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
