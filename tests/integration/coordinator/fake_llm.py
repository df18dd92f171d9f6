"""A small deterministic OpenAI-compatible chat-completions server for the tests: the one
allowed test double (it stands in for a remote API). It runs in a thread of the test process,
so a test can change how it behaves between calls.

Modes: "answer" streams "<name> answer: <question>" word by word (then [DONE]); "fail"
answers HTTP 500; "garbage" answers an HTML page; "hang" sends headers and then nothing;
"midway" streams two chunks and closes without [DONE]. GET /v1/models answers 200 while
`healthy`, else 503.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("answer", "fail", "garbage", "hang", "midway")


def chunk(content: str | None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class FakeLLM:
    def __init__(self, name: str) -> None:
        self.name = name
        self.mode = "answer"
        self.healthy = True
        self.chunk_delay_s = 0.0
        self.hang_s = 5.0
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/v1/models":
                    self.send_error(404)
                    return
                status = 200 if fake.healthy else 503
                self._send(status, "application/json", json.dumps({"data": [{"id": fake.name}]}))

            def do_POST(self) -> None:
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.requests.append(body)
                fake._respond(self, body)

            def _send(self, status: int, content_type: str, text: str) -> None:
                data = text.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._handler = Handler
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def reset(self) -> None:
        self.mode, self.healthy, self.chunk_delay_s = "answer", True, 0.0
        with self._lock:
            self.requests.clear()

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    def answer_for(self, question: str) -> str:
        return f"{self.name} answer: {question}"

    @staticmethod
    def question(body: dict[str, Any]) -> str:
        prompt = body["messages"][-1]["content"]
        return prompt.rsplit("Question: ", 1)[-1]

    def _respond(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        mode = self.mode
        if mode == "fail":
            handler.send_error(500, "boom")
            return
        if mode == "garbage":
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html")
            handler.end_headers()
            handler.wfile.write(b"<html><body>Welcome to nginx!</body></html>\n")
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        handler.wfile.flush()
        if mode == "hang":
            time.sleep(self.hang_s)
            return
        words = self.answer_for(self.question(body)).split(" ")
        pieces = [word + " " for word in words[:-1]] + [words[-1]]
        if mode == "midway":
            pieces = pieces[:2]
        for piece in pieces:
            handler.wfile.write(chunk(piece))
            handler.wfile.flush()
            if self.chunk_delay_s:
                time.sleep(self.chunk_delay_s)
        if mode == "midway":
            return
        handler.wfile.write(chunk(None, "stop"))
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
