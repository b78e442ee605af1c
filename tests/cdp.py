"""A minimal Chrome DevTools Protocol client for the browser tests: Debian's headless Chromium.

No browser download, no extra package: Chromium is ``/usr/bin/chromium`` (installed by
``scripts/ensure-chromium.sh``), and the protocol is JSON over the websocket aiohttp already
provides. ``Browser.start`` launches it with a fresh profile and the flags that keep it off
the network (no background requests, component updates or sync); ``Page`` navigates,
evaluates JavaScript, records every network request and its outcome, console errors and
exceptions, and takes screenshots.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ENSURE_SCRIPT = ROOT / "scripts" / "ensure-chromium.sh"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-default-browser-check",
    "--mute-audio",
    "--hide-scrollbars",
)


def ensure_chromium() -> str | None:
    """Install Chromium if missing; None when it is there, else why it could not be."""
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return None
    try:
        result = subprocess.run(
            ["bash", str(ENSURE_SCRIPT)], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{ENSURE_SCRIPT.name} failed: {exc}"
    if result.returncode != 0 or not CHROMIUM.is_file():
        return f"{ENSURE_SCRIPT.name} could not install Chromium: {result.stderr.strip()[-500:]}"
    return None


@dataclass
class Request:
    url: str
    method: str
    status: int | None = None
    failed: str | None = None
    canceled: bool = False


@dataclass
class Page:
    """One tab, attached over its own websocket."""

    ws: aiohttp.ClientWebSocketResponse
    requests: dict[str, Request] = field(default_factory=dict)
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _pending: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    _events: dict[str, list[asyncio.Future[dict[str, Any]]]] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        message_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self.ws.send_str(
            json.dumps({"id": message_id, "method": method, "params": params or {}})
        )
        return await asyncio.wait_for(future, 30)

    def wait_event(self, method: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._events.setdefault(method, []).append(future)
        return future

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(RuntimeError(f"CDP error: {data['error']}"))
                    else:
                        future.set_result(data.get("result", {}))
                continue
            self._event(data.get("method", ""), data.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        for future in self._events.pop(method, []):
            if not future.done():
                future.set_result(params)
        if method == "Network.requestWillBeSent":
            request = params["request"]
            self.requests[params["requestId"]] = Request(request["url"], request["method"])
        elif method == "Network.responseReceived":
            entry = self.requests.get(params["requestId"])
            if entry is not None:
                entry.status = params["response"]["status"]
        elif method == "Network.loadingFailed":
            entry = self.requests.get(params["requestId"])
            if entry is not None:
                entry.failed = params.get("errorText") or "failed"
                entry.canceled = bool(params.get("canceled"))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.exceptions.append(text)
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.console_errors.append(
                " ".join(
                    str(arg.get("value", arg.get("description", "")))
                    for arg in params.get("args", [])
                )
            )
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                self.console_errors.append(
                    f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}"
                )

    async def enable(self, width: int, height: int) -> None:
        for domain in ("Page", "Network", "Runtime", "Log"):
            await self.send(f"{domain}.enable")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    async def goto(self, url: str, timeout_s: float = 20.0) -> None:
        loaded = self.wait_event("Page.loadEventFired")
        await self.send("Page.navigate", {"url": url})
        await asyncio.wait_for(loaded, timeout_s)

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float, interval_s: float = 0.05) -> Any:
        """Evaluate until the value is truthy; returns it, or raises TimeoutError."""
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(interval_s)
        raise TimeoutError(f"{expression!r} still {value!r} after {timeout_s}s")

    async def screenshot(self, path: Path) -> None:
        result = await self.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False}
        )
        await asyncio.to_thread(_write, path, base64.b64decode(result["data"]))

    def failures(self) -> list[Request]:
        """Requests that failed or got an error status (the live stream cut at close aside)."""
        return [
            r
            for r in self.requests.values()
            if (r.failed is not None and not r.canceled)
            or (r.status is not None and r.status >= 400)
        ]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _launch(profile: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [
                str(CHROMIUM),
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1440,900",
                "about:blank",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


@dataclass
class Browser:
    process: subprocess.Popen[bytes]
    profile: Path
    port: int
    session: aiohttp.ClientSession

    @classmethod
    async def start(cls, *, log_path: Path, timeout_s: float = 30.0) -> Browser:
        profile = Path(tempfile.mkdtemp(prefix="kpi-chromium-"))
        process = await asyncio.to_thread(_launch, profile, log_path)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        port = 0
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"chromium exited with {process.returncode}; see {log_path}")
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                port = int(port_file.read_text().splitlines()[0])
                break
            await asyncio.sleep(0.1)
        if not port:
            process.kill()
            raise RuntimeError(f"chromium did not open its DevTools port in {timeout_s}s")
        session = aiohttp.ClientSession()
        return cls(process, profile, port, session)

    async def new_page(self) -> Page:
        async with self.session.put(
            f"http://127.0.0.1:{self.port}/json/new?about:blank"
        ) as response:
            target = await response.json(content_type=None)
        ws = await self.session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        page.start()
        return page

    async def close(self) -> None:
        await self.session.close()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                await asyncio.to_thread(self.process.wait, 5)
        shutil.rmtree(self.profile, ignore_errors=True)
