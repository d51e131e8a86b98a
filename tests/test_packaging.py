"""The optional extras stay optional: the API, the scheduler and the command line run without the `analytics`
extra (pandas, pyarrow, matplotlib), and the routes that need it say how to install it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# Made unimportable in the child process, as on an install without the extra.
WITHOUT_EXTRAS = "import sys\nfor name in ('matplotlib', 'pandas', 'pyarrow', 'numpy'):\n    sys.modules[name] = None\n"


def run_without_extras(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    script = WITHOUT_EXTRAS + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
        env={"PATH": "/usr/bin:/bin", "DISPO_DATA_DIR": str(tmp_path)},
    )


def test_the_api_serves_without_the_analytics_extra_and_names_it_where_needed(tmp_path: Path) -> None:
    done = run_without_extras(
        """
        from fastapi.testclient import TestClient
        from api.app import create_app
        from api.auth import Role, new_token
        from core.settings import Settings
        token, entry = new_token(Role.analyst, "analyst")
        with TestClient(create_app(Settings(tokens=entry))) as client:
            auth = {"Authorization": f"Bearer {token}"}
            print(client.get("/v1/coverage/dictionary", headers=auth).status_code)
            answer = client.get("/v1/coverage/map.png", headers=auth)
            print(answer.status_code, answer.headers["content-type"], answer.json()["type"])
            print(client.get("/v1/coverage/export/coverage.csv", headers=auth).status_code)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == [
        "200",
        "501 application/problem+json /problems/analytics-extra-missing",
        "501",
    ]


def test_the_scheduler_and_its_coverage_snapshots_need_no_extra(tmp_path: Path) -> None:
    done = run_without_extras(
        """
        import asyncio
        from aggregation.scheduler import Aggregator
        from analytics.snapshots import snapshot_now
        from analytics.tables import latest_snapshot
        from core.settings import Settings
        from indexer.factory import make_backend
        settings = Settings()
        backend = make_backend(settings)
        reports = asyncio.run(Aggregator(backend, settings, snapshot=snapshot_now).run_once())
        print(reports, latest_snapshot(backend) is not None)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] True"
