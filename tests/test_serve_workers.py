"""`dispo serve` with several worker processes: each its own interpreter and connections, all of them one API.

A cursor handed out by one worker is opened by any other (they share the server's key), and searches keep
answering while the embedded index is written by another process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from support import generated_world

from api.auth import Role, new_token


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


@pytest.mark.timeout(240)
def test_two_workers_serve_one_api_and_honour_each_others_cursors(tmp_path: Path) -> None:
    with generated_world("sqlite", tmp_path, seed=4, n_vendors=1) as (_backend, _settings, _servers):
        token, entry = new_token(Role.regulator, "test")
        port = _free_port()
        env = {
            **os.environ,
            "DISPO_BACKEND": "sqlite",
            "DISPO_DATA_DIR": str(tmp_path),  # its index/ is the world's
            "DISPO_TOKENS": entry,
            "DISPO_WORKERS": "2",
            "DISPO_STALENESS_LIMIT_S": "1000000000",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "dispo.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 90
            while True:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
                try:
                    if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.3)
            workers = _children(server.pid)
            assert len(workers) >= 2, "a process per worker"
            headers = {"Authorization": f"Bearer {token}"}
            params = {"department": "01", "limit": 3, "verify": "false", "seed": 5}
            # New connections each time: the kernel spreads them over the workers, and every cursor must open.
            with httpx.Client(base_url=url, headers=headers, timeout=30) as first:
                page = first.get("/v1/search", params=params)
            assert page.status_code == 200, page.text
            seen = [c["site"]["site_id"] for c in page.json()["cards"]]
            assert len(seen) == 3
            cursor = page.json()["next_cursor"]
            for _ in range(4):
                with httpx.Client(base_url=url, headers=headers, timeout=30) as other:
                    nxt = other.get("/v1/search", params={**params, "cursor": cursor})
                assert nxt.status_code == 200, nxt.text
                ids = [c["site"]["site_id"] for c in nxt.json()["cards"]]
                assert ids and not set(ids) & set(seen), "a later page continues after the first"
                again = nxt
            assert [c["site"]["site_id"] for c in again.json()["cards"]] == ids  # the same cursor, the same page
        finally:
            server.terminate()
            server.wait(timeout=30)
