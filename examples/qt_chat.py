"""The Tk chat window again, in PySide6: Send, Stop, thinking apart, history kept.

Run: python examples/qt_chat.py [--host URL --model NAME]
Needs: pip install 'ollama-stream-sync[qt]'. Callbacks run on the Qt thread
through QtDispatcher; coalescing keeps repaints to tens per second; the status
line follows the stream's phase. The dispatcher belongs to the window: when the
window is destroyed mid-stream, the stream stops.
"""

from __future__ import annotations

import argparse
import sys

from gui_demo_server import ollama_host
from PySide6.QtGui import QCloseEvent, QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from ollama_stream_sync import (
    ChatResult,
    Conversation,
    QtDispatcher,
    StreamError,
    StreamHandle,
    StreamingClient,
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


class ChatWindow(QWidget):
    """The window; everything here runs on the Qt thread."""

    def __init__(self, client: StreamingClient, model: str) -> None:
        super().__init__()
        self.conversation = Conversation(client, model, think=True)
        self.dispatcher = QtDispatcher(parent=self)  # closes when we are destroyed
        self.handle: StreamHandle | None = None
        self.last_result: ChatResult | None = None
        self.answering = False
        self.shown = {"thinking": "", "answer": ""}
        self.setWindowTitle("ollama-stream-sync · Qt")
        self.resize(640, 420)

        self.transcript = QTextEdit(readOnly=True)
        self.prompt = QLineEdit(placeholderText="Ask something")
        self.prompt.returnPressed.connect(self.send)
        self.send_button = QPushButton("Send")
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.status = QLabel("Ready.")

        row = QHBoxLayout()
        row.addWidget(self.prompt)
        row.addWidget(self.send_button)
        row.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.transcript)
        layout.addLayout(row)
        layout.addWidget(self.status)

    def _write(self, text: str, kind: str = "") -> None:
        fmt = QTextCharFormat()
        if kind == "thinking":
            fmt.setForeground(self.palette().placeholderText())
            fmt.setFontItalic(True)
        elif kind == "user":
            fmt.setFontWeight(700)
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text, fmt)
        self.transcript.setTextCursor(cursor)
        if kind in self.shown:
            self.shown[kind] += text

    def send(self) -> None:
        text = self.prompt.text().strip()
        if not text or self.handle is not None:
            return
        self.prompt.clear()
        self._write(f"\nYou: {text}\n", "user")
        self.answering = False
        self.send_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.status.setText("Sending…")
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
            self.status.setText(PHASES[phase])

    def _on_content(self, text: str) -> None:
        if not self.answering:  # the answer starts on its own line
            self.answering = True
            self._write("\n")
        self._write(text, "answer")

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()

    def _finish(self) -> None:
        self.handle = None
        self.send_button.setEnabled(True)
        self.stop_button.setEnabled(False)

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
        self.status.setText(" · ".join(parts))

    def _on_error(self, error: StreamError) -> None:
        self._finish()
        self.status.setText(f"Error: {error}")

    def closeEvent(self, event: QCloseEvent) -> None:
        self.stop()
        super().closeEvent(event)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host")
    parser.add_argument("--model", default="qwen3")
    args = parser.parse_args()
    app = QApplication(sys.argv[:1])
    # Against a real Ollama, ask whether the model is loaded: "Loading the model…"
    probe = args.host is not None
    with (
        ollama_host(args.host) as host,
        StreamingClient(host, probe_loading=probe) as client,
    ):
        window = ChatWindow(client, args.model)
        window.show()
        return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
