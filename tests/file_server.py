"""A server of the national files on loopback, as their publishers serve them over HTTP: byte ranges (206), a
Last-Modified date, and faults on demand (a connection cut after some bytes, a length it does not send)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar


class FileServer(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, Path]] = {}  # URL path -> file served
    cut_after: ClassVar[int | None] = None  # the next answer stops after this many bytes, then the faults reset
    ranges: ClassVar[bool] = True  # honour Range requests
    last_modified: ClassVar[str] = "Tue, 01 Dec 2026 04:30:00 GMT"
    requests: ClassVar[list[dict[str, str | None]]] = []
    posted: ClassVar[list[bytes]] = []  # bodies POSTed (a webhook)
    post_status: ClassVar[list[int]] = []  # the statuses of the next POSTs, 204 once they are used up

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = FileServer.post_status.pop(0) if FileServer.post_status else 204
        if status < 300:
            FileServer.posted.append(body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        FileServer.requests.append({"path": self.path, "range": self.headers.get("Range")})
        path = self.files.get(self.path)
        if path is None:
            self.send_error(404)
            return
        body = path.read_bytes()
        start = 0
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        still = self.headers.get("If-Range") in (None, self.last_modified)  # the file asked for is the one served
        if asked and self.ranges and still:
            start = int(asked.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        part = body[start:]
        self.send_header("Content-Length", str(len(part)))
        self.send_header("Last-Modified", self.last_modified)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = FileServer.cut_after
        if cut is not None:
            FileServer.cut_after = None
            self.wfile.write(part[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(part)


@contextmanager
def serving(files: dict[str, Path]) -> Iterator[str]:
    """The server's base URL while it serves these files; its faults and log reset."""
    FileServer.files, FileServer.cut_after, FileServer.ranges, FileServer.requests = dict(files), None, True, []
    FileServer.posted, FileServer.post_status = [], []
    FileServer.last_modified = "Tue, 01 Dec 2026 04:30:00 GMT"
    server = ThreadingHTTPServer(("127.0.0.1", 0), FileServer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
