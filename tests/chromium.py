"""Headless Chromium driven over the DevTools protocol on a pipe (stdlib only): a test helper, not a fixture.

Used by the report's browser test; set ``CHROMIUM`` to the browser binary
(default ``/usr/bin/chromium``, Debian package ``chromium``).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "Chromium"]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


# Put the pipe ends on fds 3 and 4, then exec chromium (dash cannot redirect fds above 9).
_FDS_3_4 = (
    "import os, sys; r, w = (os.dup(int(fd)) for fd in sys.argv[1:3]); "
    "os.dup2(r, 3); os.dup2(w, 4); os.set_inheritable(3, True); os.set_inheritable(4, True); "
    "os.execv(sys.argv[3], sys.argv[3:])"
)


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (stdlib only).

    ``--remote-debugging-pipe`` makes Chromium read NUL-separated JSON
    commands on fd 3 and answer on fd 4, so no websocket client is needed.
    Every event is kept in ``events`` (console messages, exceptions, requests).
    """

    def __init__(self, binary: str = CHROMIUM, width: int = 1400, height: int = 1000) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="chromium-")
        to_chrome, self._w = os.pipe()
        self._r, from_chrome = os.pipe()
        self.log_path = Path(self._tmp.name) / "stderr.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _FDS_3_4, str(to_chrome), str(from_chrome), binary,
                 "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-extensions", "--disable-quic",
                 "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: no name resolves
                 f"--user-data-dir={self._tmp.name}/profile", f"--window-size={width},{height}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, pass_fds=(to_chrome, from_chrome),
            )
        os.close(to_chrome)
        os.close(from_chrome)
        self._next = 0
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self._cv = threading.Condition()
        self.session: str | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        with os.fdopen(self._r, "rb", buffering=0) as f:
            while chunk := f.read(1 << 16):
                buf += chunk
                *msgs, buf = buf.split(b"\0")
                with self._cv:
                    for raw in msgs:
                        msg = json.loads(raw)
                        if "id" in msg:
                            self._replies[msg["id"]] = msg
                        else:
                            self.events.append(msg)
                    self._cv.notify_all()

    def send(self, method: str, params: dict | None = None, *, browser: bool = False, timeout: float = 30) -> dict:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if self.session and not browser:
            msg["sessionId"] = self.session
        try:
            os.write(self._w, json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            log = "\n".join(line for line in self.log_path.read_text(errors="replace").splitlines() if "dbus" not in line)
            raise RuntimeError(f"chromium exited ({self.proc.poll()}):\n{log[-3000:]}") from None
        with self._cv:
            if not self._cv.wait_for(lambda: self._next in self._replies, timeout):
                raise TimeoutError(f"{method}: no answer in {timeout}s; see {self.log_path}")
            reply = self._replies.pop(self._next)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, browser=True)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True}, browser=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        # Record instead of blocking: any alert/confirm/prompt means injected script ran.
        self.send("Page.addScriptToEvaluateOnNewDocument", {"source": (
            "window.__dialogs=[];for(const k of ['alert','confirm','prompt'])"
            "window[k]=(m)=>{window.__dialogs.push(k+':'+m);};")})
        self.send("Page.navigate", {"url": url})
        with self._cv:
            if not self._cv.wait_for(lambda: any(e.get("method") == "Page.loadEventFired" for e in self.events), 60):
                raise TimeoutError(f"page did not load: {url}")

    def eval(self, expression: str) -> Any:
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> None:
        end = time.monotonic() + timeout
        while not self.eval(expression):
            if time.monotonic() > end:
                raise TimeoutError(expression)
            time.sleep(0.1)

    def console_errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif m == "Runtime.exceptionThrown":
                out.append(str(p.get("exceptionDetails", {}).get("exception", {}).get("description") or p))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"{p['entry'].get('source')}: {p['entry'].get('text')}")
        return out

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def screenshot(self, path: Path) -> Path:
        height = int(self.eval("document.documentElement.scrollHeight"))
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": height, "deviceScaleFactor": 1, "mobile": False})
        time.sleep(0.3)  # let plotly's responsive resize settle
        png = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(png))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close", browser=True, timeout=5)
        except (TimeoutError, RuntimeError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        self._tmp.cleanup()
