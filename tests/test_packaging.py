"""The optional extras stay optional: the API, the scheduler and the command line run without the `analytics`
extra (pandas, pyarrow, matplotlib), and the routes that need it say how to install it; the compose file agrees with
what the tests run."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml
from support import ROOT

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


def test_the_compose_profiles_agree_with_the_local_script() -> None:
    """docker-compose.yml cannot run here: its cluster profile is kept consistent with what runs in the tests — the
    Elasticsearch version of `scripts/elasticsearch.sh`, three nodes naming each other, the API and both schedulers
    given every node, and nothing of one profile depending on the other."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    script = (ROOT / "scripts/elasticsearch.sh").read_text()
    version = re.search(r'ES_VERSION="\$\{DISPO_ES_VERSION:-([\d.]+)\}"', script)
    assert version is not None
    images = {s["image"] for s in services.values() if "image" in s}
    assert images == {f"docker.elastic.co/elasticsearch/elasticsearch:{version.group(1)}"}
    nodes = sorted(name for name, s in services.items() if "image" in s and "cluster" in s["profiles"])
    assert len(nodes) == 3
    for name in nodes:
        env = services[name]["environment"]
        assert env["node.name"] == name
        assert sorted(env["discovery.seed_hosts"].split(",")) == nodes
        assert sorted(env["cluster.initial_master_nodes"].split(",")) == nodes
    clients = [s for s in services.values() if "build" in s and "cluster" in s["profiles"]]
    assert len([s for s in clients if s.get("command") == ["dispo", "aggregate"]]) == 2, "a leader and a standby"
    for service in clients:
        urls = service["environment"]["DISPO_ES_URL"].split(",")
        assert sorted(urls) == [f"http://{n}:9200" for n in nodes]
    for name, service in services.items():
        (profile,) = service["profiles"]
        assert all(services[d]["profiles"] == [profile] for d in service.get("depends_on", {})), name
    assert "COMPOSE_PROFILES=single" in (ROOT / ".env").read_text()
