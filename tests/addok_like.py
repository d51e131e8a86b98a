"""An endpoint speaking addok's protocols on loopback (`GET /search/` GeoCodeJSON, `POST /search/csv/`), answering
from the commune base: a house-number position 0.001° north of the commune's centre, a low score for a street
starting with '?', nothing for an unknown commune."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

from core.geo import gazetteer


class AddokLike(BaseHTTPRequestHandler):
    calls: ClassVar[list[dict]] = []
    fail_next = 0  # the next requests answered with `fail_status`
    fail_status = 503
    north_deg = 0.001  # how far north of the commune's centre the house-number positions are

    def failing(self) -> bool:
        if type(self).fail_next <= 0:
            return False
        type(self).fail_next -= 1
        self.send_response(type(self).fail_status)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # GET /search/?q=...: GeoCodeJSON, as the national address API answers
        from urllib.parse import parse_qs, urlparse

        q = parse_qs(urlparse(self.path).query).get("q", [""])[0]
        type(self).calls.append({"path": urlparse(self.path).path, "q": q})
        if self.failing():
            return
        features = []
        if "belley" in q.lower():
            belley = gazetteer().commune("01034")
            features = [
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [belley.lon, belley.lat + 0.001]},
                    "properties": {"label": q, "score": 0.91, "type": "housenumber", "citycode": "01034"},
                }
            ]
        payload = json.dumps({"type": "FeatureCollection", "features": features}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = self.rfile.read(length)
        msg = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body
        )
        fields: dict[str, list[str]] = {}
        data = ""
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "data":
                data = part.get_payload(decode=True).decode("utf-8")
            else:
                fields.setdefault(name, []).append(part.get_content().strip())
        type(self).calls.append({"path": self.path, "fields": fields, "rows": data.count("\n") - 1})
        if self.failing():
            return
        out = io.StringIO()
        rows = list(csv.DictReader(io.StringIO(data)))
        writer = csv.DictWriter(
            out, fieldnames=[*rows[0].keys(), "latitude", "longitude", "result_score", "result_type"]
        )
        writer.writeheader()
        for row in rows:
            commune = gazetteer().commune(row["citycode"])
            if commune is None:
                writer.writerow({**row, "latitude": "", "longitude": "", "result_score": "", "result_type": ""})
            elif row["street"].startswith("?"):
                writer.writerow(
                    {
                        **row,
                        "latitude": commune.lat,
                        "longitude": commune.lon,
                        "result_score": "0.2",
                        "result_type": "street",
                    }
                )
            else:
                writer.writerow(
                    {
                        **row,
                        "latitude": commune.lat + AddokLike.north_deg,
                        "longitude": commune.lon,
                        "result_score": "0.93",
                        "result_type": "housenumber",
                    }
                )
        payload = out.getvalue().encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/csv")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextmanager
def serving() -> Iterator[str]:
    """The endpoint's URL while it runs, its calls and failures reset."""
    AddokLike.calls = []
    AddokLike.fail_next = 0
    AddokLike.fail_status = 503
    AddokLike.north_deg = 0.001
    server = ThreadingHTTPServer(("127.0.0.1", 0), AddokLike)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
