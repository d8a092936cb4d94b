"""Load a page in headless Chromium and collect what went wrong, over the DevTools protocol on a pipe.

Chromium is started with ``--remote-debugging-pipe``: it reads protocol messages (JSON, each ended by a NUL
byte) on file descriptor 3 and writes on 4, so no port, websocket library or browser download is needed. The
page's console errors, uncaught exceptions, log errors (a failed load, a blocked resource) and every network
request other than the page's own file are collected while it loads.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--window-size=1280,900"]


def find_chromium() -> str | None:
    """Debian's ``chromium`` (or another Chromium / Chrome on PATH)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageLoad:
    """What loading a page produced: the problems found, and the values of the expressions evaluated on it."""

    problems: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


class Chromium:
    """One headless Chromium process driven over a pipe; use as a context manager."""

    def __init__(self, binary: str) -> None:
        self._profile = tempfile.mkdtemp(prefix="bnnflow-chromium-")
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def wire_pipes() -> None:  # in the child: its fd 3 reads our commands, its fd 4 carries the replies
            import fcntl

            commands, replies = fcntl.fcntl(to_browser, fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser, fcntl.F_DUPFD, 10)
            os.dup2(commands, 3)
            os.dup2(replies, 4)
            os.close(commands)
            os.close(replies)

        self._process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False,
            preexec_fn=wire_pipes)
        os.close(to_browser)
        os.close(from_browser)
        self._messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next_id = 0
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self) -> None:
        buffer = b""
        while chunk := os.read(self._read, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._messages.put(json.loads(message))
        self._messages.put(None)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             events: list[dict[str, Any]] | None = None, timeout: float = 30) -> dict[str, Any]:
        """Send one command and wait for its reply; events arriving meanwhile go to ``events``."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._get(deadline, method)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if events is not None and "method" in reply:
                events.append(reply)

    def _get(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        try:
            message = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"Chromium did not answer {waiting_for} in time") from None
        if message is None:
            raise RuntimeError(f"Chromium closed the pipe while waiting for {waiting_for}")
        return message

    def load(self, page: Path, expressions: dict[str, str], settle: float = 0.3) -> PageLoad:
        """Open ``page`` in a new tab, wait for its load event (and ``settle`` seconds more for late errors),
        evaluate ``expressions`` (JavaScript, each returning JSON-able values) and list what went wrong."""
        events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session, events=events)
        url = page.resolve().as_uri()
        self.call("Page.navigate", {"url": url}, session=session, events=events)
        deadline = time.monotonic() + 30
        while not any(e["method"] == "Page.loadEventFired" for e in events):
            message = self._get(deadline, "the page's load event")
            if "method" in message:
                events.append(message)
        settled = time.monotonic() + settle
        while time.monotonic() < settled:
            try:
                message = self._messages.get(timeout=max(0.0, settled - time.monotonic()))
            except queue.Empty:
                break
            if message is None:
                raise RuntimeError("Chromium closed the pipe while the page settled")
            if "method" in message:
                events.append(message)
        result = PageLoad()
        for name, expression in expressions.items():
            reply = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session,
                              events=events)
            if "exceptionDetails" in reply:
                result.problems.append(f"evaluating {name}: {reply['exceptionDetails'].get('text')}")
            result.values[name] = reply.get("result", {}).get("value")
        result.problems[:0] = problems_in(events, url)
        self.call("Target.closeTarget", {"targetId": target})
        return result

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._write)
        os.close(self._read)
        shutil.rmtree(self._profile, ignore_errors=True)


def problems_in(events: list[dict[str, Any]], page_url: str) -> list[str]:
    """Console errors and assertions, uncaught exceptions, log errors and requests for anything but the page."""
    problems = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
            problems.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            problems.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            problems.append(f"log error: {params['entry'].get('text')} ({params['entry'].get('url', '')})")
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if url != page_url and not url.startswith("data:"):
                problems.append(f"network request: {url}")
    return problems
