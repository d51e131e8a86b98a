"""The `dispo` command line: every documented command, imports with reports and exit codes, search, lookups,
tokens, errors told in one line, and no optional extra loaded by the commands that do not need it."""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import typer
from support import BACKENDS, FINESS_FLAT, ROOT, RPPS_SAMPLE, es_url
from typer.testing import CliRunner

from dispo.cli import app

runner = CliRunner(env={"COLUMNS": "250"})  # no line wrapping in what the tests read


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DISPO_DATA_DIR", str(tmp_path / "dispo"))
    monkeypatch.setenv("DISPO_BACKEND", request.param)
    if request.param == "elasticsearch":
        monkeypatch.setenv("DISPO_ES_URL", es_url() or "")
        prefix = f"dispotest-{uuid.uuid4().hex[:10]}"
        monkeypatch.setenv("DISPO_INDEX_PREFIX", prefix)
        yield tmp_path
        from indexer.es_backend import ElasticsearchBackend

        ElasticsearchBackend(es_url() or "", prefix=prefix).delete_all()
    else:
        yield tmp_path


def run(*args: str):
    return runner.invoke(app, list(args))


# Every command path the README documents.
DOCUMENTED = [
    "import finess",
    "import rpps",
    "search",
    "sites",
    "show practitioner",
    "show structure",
    "show cpts",
    "index status",
    "tokens create",
    "serve",
    "sandbox",
    "vendors add",
    "vendors list",
    "vendors disable",
    "vendors status",
    "slots list",
    "vendors check",
    "participations load",
    "aggregate",
    "audit neutrality",
    "appointments list",
    "coverage snapshot",
    "coverage show",
    "coverage evolution",
    "coverage under-served",
    "coverage vendors",
    "coverage appointments",
    "coverage export",
    "coverage map",
    "coverage chart",
    "generate",
    "bench",
    "drill",
    "lrm run",
    "lrm status",
    "lrm recipients set",
    "lrm recipients list",
    "lrm-sandbox",
    "accounts create",
    "accounts grant",
    "accounts revoke",
    "accounts list",
    "accounts show",
    "accounts audit",
    "calendar set",
    "calendar show",
    "calendar publish",
    "imports list",
    "imports show",
]
ANALYTICS_EXTRA = ("matplotlib", "pandas", "pyarrow", "numpy")


def registered_paths(typer_app: typer.Typer, prefix: str = "") -> list[str]:
    """Every command path as the sub-apps register it, a name registered twice listed twice."""
    paths = [prefix + typer.main.get_command_name(c.name or c.callback.__name__) for c in typer_app.registered_commands]
    for group in typer_app.registered_groups:
        paths += registered_paths(group.typer_instance, f"{prefix}{group.name} ")
    return paths


def python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter, from the checkout, with its own data folder."""
    env = {"PATH": "/usr/bin:/bin", "DISPO_DATA_DIR": str(tmp_path / "dispo"), "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )


def test_every_documented_command_is_registered_once_and_answers_help() -> None:
    assert sorted(registered_paths(app)) == sorted(DOCUMENTED)
    for path in DOCUMENTED:
        r = run(*path.split(), "--help")
        assert r.exit_code == 0 and "Usage:" in r.output, (path, r.output)


def test_help_loads_no_optional_extra(tmp_path: Path) -> None:
    """Every command module is imported by `dispo --help`: none may load pandas, pyarrow or matplotlib."""
    done = python(
        f"""
        import sys
        from dispo.cli import main
        sys.argv = ["dispo", "--help"]
        try:
            main()
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        print(sorted(set(sys.modules) & set({ANALYTICS_EXTRA!r})))
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: dispo" in done.stdout and done.stdout.splitlines()[-1] == "[]"


def test_without_the_analytics_extra_only_its_files_and_pictures_are_refused(tmp_path: Path) -> None:
    done = python(
        f"""
        import sys
        for name in {ANALYTICS_EXTRA!r}:
            sys.modules[name] = None  # unimportable, as on an install without the extra
        from typer.testing import CliRunner
        from dispo.cli import app
        for args in (
            ["coverage", "map", "--out", {str(tmp_path / "map.png")!r}],
            ["coverage", "export", "--out", {str(tmp_path / "exports")!r}],
            ["coverage", "vendors", "--json"],
        ):
            r = CliRunner().invoke(app, args)
            print(r.exit_code, "pip install 'dispo[analytics]'" in r.output)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["2 True", "2 True", "0 False"]


def test_import_prints_a_report_and_search_finds_the_sites(env: Path) -> None:
    r = run("import", "finess", str(FINESS_FLAT))
    assert r.exit_code == 0, r.output
    r = run("import", "rpps", str(RPPS_SAMPLE))
    assert r.exit_code == 0, r.output
    for text in ("lines read", "22", "accepted", "position: establishment", "switched", "line-level report"):
        assert text in r.output
    r = run("sites", "--postcode", "01300", "--radius", "5", "--json")
    assert r.exit_code == 0, r.output
    answer = json.loads(r.stdout)
    assert {x["site"]["practitioner"]["last_name"] for x in answer["results"]} == {"PITHOUD", "CHEPY"}
    r = run("sites", "--lat", "46.2", "--lon", "5.2", "--radius", "50")
    assert r.exit_code == 0 and "practice site(s)" in r.output
    r = run("show", "practitioner", "810106476764", "--json")
    assert json.loads(r.stdout)["practitioner"]["last_name"] == "BENHOUCHAME"
    r = run("show", "structure", "010000032")
    assert "CH HAUT BUGEY" in r.output
    r = run("index", "status", "--json")
    status = json.loads(r.stdout)
    assert status["indices"]["practice_sites"]["documents"] == 22
    r = run("search", "--postcode", "01300", "--no-verify", "--json")
    assert r.exit_code == 0, r.output
    answer = json.loads(r.stdout)
    assert answer["place"]["label"] == "01300" and answer["cards"] == []  # no vendor: no free slot anywhere
    r = run("search", "--postcode", "01300", "--no-verify")
    assert r.exit_code == 0 and "0 practitioner(s) with a free slot" in r.output
    assert "No practitioner with a free slot within" in r.output  # the explanation


def test_refused_import_exits_non_zero_and_keeps_the_live_index(env: Path) -> None:
    assert run("import", "rpps", str(RPPS_SAMPLE)).exit_code == 0
    lines = RPPS_SAMPLE.read_text(encoding="utf-8").splitlines()
    small = env / "small.txt"
    small.write_text("\n".join(lines[:10]) + "\n", encoding="utf-8")
    r = run("import", "rpps", str(small))
    assert r.exit_code == 3
    assert "import refused" in r.output and "--force" in r.output
    r = run("index", "status", "--json")
    assert json.loads(r.stdout)["indices"]["practice_sites"]["documents"] == 22
    assert run("import", "rpps", str(small), "--force").exit_code == 0


def test_rejected_file_and_missing_file_say_what_to_do(env: Path) -> None:
    bad = env / "bad.txt"
    bad.write_text("a;b;c;d;e\n1;2;3;4;5\n", encoding="utf-8")
    r = run("import", "rpps", str(bad))
    assert r.exit_code == 2 and "wrong separator" in r.output and "live index is unchanged" in r.output
    r = run("import", "finess", str(env / "missing.csv"))
    assert r.exit_code == 2 and "no such file" in r.output


@pytest.mark.parametrize("kind", ["finess", "rpps", "participations"])
def test_binary_packed_or_folder_files_exit_2_with_what_to_do(kind: str, tmp_path: Path) -> None:
    command = ["participations", "load"] if kind == "participations" else ["import", kind]
    noise = tmp_path / "noise.csv"
    noise.write_bytes(FINESS_FLAT.read_bytes()[:300] + bytes(range(256)) * 40)
    packed = tmp_path / "stock.csv.gz"
    packed.write_bytes(gzip.compress(FINESS_FLAT.read_bytes()))
    for path, said in [
        (noise, "a binary file (NUL bytes"),
        (packed, "a gzip archive, not a text file"),
        (tmp_path, "not a file"),
    ]:
        r = CliRunner(env={"COLUMNS": "250", "DISPO_DATA_DIR": str(tmp_path / "dispo")}).invoke(
            app, [*command, str(path)]
        )
        assert r.exit_code == 2 and said in r.output and "Traceback" not in r.output, r.output


def test_a_line_the_csv_rules_cannot_read_is_rejected_alone(env: Path) -> None:
    lines = FINESS_FLAT.read_bytes().splitlines(keepends=True)
    broken = env / "finess.csv"
    # A bare carriage return inside an unquoted field: the csv module refuses the line.
    broken.write_bytes(b"".join([*lines[:2], lines[2].replace(b";", b";\r", 1), *lines[3:]]))
    r = run("import", "finess", str(broken), "--force")
    assert r.exit_code == 0, r.output
    assert "rejected: unreadable line" in r.output


def test_bad_search_input_is_explained(env: Path) -> None:
    r = run("sites", "--postcode", "00000")
    assert r.exit_code == 2 and "Unknown postcode" in r.output
    r = run("search", "--postcode", "01300", "--modality", "car")
    assert r.exit_code == 2 and "invalid search: unknown modality car" in r.output
    r = run("search", "--postcode", "01300", "--cursor", "garbage")
    assert r.exit_code == 2 and "invalid search: the cursor is not one this API returned" in r.output


def test_a_missing_record_exits_1_with_what_is_missing(env: Path) -> None:
    r = run("show", "practitioner", "810000000000")
    assert r.exit_code == 1 and "Not found: No practitioner with IDNPS '810000000000'" in r.output
    r = run("show", "structure", "019999999")
    assert r.exit_code == 1 and "Not found: No establishment with FINESS '019999999'" in r.output


def test_an_unreachable_backend_exits_4_with_what_to_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DISPO_DATA_DIR", str(tmp_path / "dispo"))
    monkeypatch.setenv("DISPO_BACKEND", "elasticsearch")
    monkeypatch.setenv("DISPO_ES_URL", f"http://127.0.0.1:{port}")
    r = run("show", "practitioner", "810106476764")
    assert r.exit_code == 4, r.output
    assert "backend unavailable: Elasticsearch at" in r.output and "check DISPO_ES_URL / DISPO_BACKEND" in r.output


def test_empty_listings_print_an_empty_table_or_an_empty_json_array(env: Path) -> None:
    r = run("appointments", "list")
    assert r.exit_code == 0 and "0 appointment(s)" in r.output and "regulator" in r.output
    assert json.loads(run("appointments", "list", "--json").stdout) == []
    assert json.loads(run("vendors", "status", "--json").stdout) == []
    r = run("vendors", "list")
    assert r.exit_code == 0 and "0 vendor(s)" in r.output


def test_tokens_create_appends_a_hashed_entry(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    r = run("tokens", "create", "--role", "analyst", "--label", "ars-ara", "--file", str(tokens))
    assert r.exit_code == 0
    token = r.stdout.strip()
    entry = tokens.read_text(encoding="utf-8").strip()
    assert entry.startswith("analyst:") and entry.endswith(":ars-ara") and token not in entry
    assert run("tokens", "create", "--role", "king").exit_code == 2


def test_vendors_add_list_disable(env: Path) -> None:
    r = run("vendors", "add", "v1", "--base-url", "http://127.0.0.1:8100/fhir", "--bearer-token", "tok-123")
    assert r.exit_code == 0, r.output
    listed = json.loads(run("vendors", "list", "--json").stdout)
    assert listed == [
        {
            "vendor_id": "v1",
            "name": "v1",
            "base_url": "http://127.0.0.1:8100/fhir",
            "auth": "bearer",
            "concurrency": 4,
            "timeout_s": 7.0,
            "requests_per_second": 20.0,
            "flows": ["individual"],
            "enabled": True,
        }
    ]
    assert "tok-123" not in run("vendors", "list").output
    base = ("vendors", "add", "v1", "--base-url", "http://127.0.0.1:8100/fhir")
    r = run(*base, "--flow", "cpts", "--flow", "individual")
    assert r.exit_code == 0, r.output
    assert json.loads(run("vendors", "list", "--json").stdout)[0]["flows"] == ["cpts", "individual"]
    assert "cpts, individual" in run("vendors", "list").output
    assert run(*base, "--flow", "fax").exit_code == 2
    assert run("vendors", "disable", "v1").exit_code == 0
    assert json.loads(run("vendors", "list", "--json").stdout)[0]["enabled"] is False
    assert run("vendors", "disable", "nope").exit_code == 1


def test_vendors_check_runs_the_test_kit_requirements_against_a_vendor(tmp_path: Path, monkeypatch) -> None:
    from editor_sandbox.agenda import SandboxConfig, SandboxPractitioner, SandboxSite
    from editor_sandbox.server import SandboxServer

    monkeypatch.setenv("DISPO_DATA_DIR", str(tmp_path / "dispo"))
    monkeypatch.setenv("DISPO_BACKEND", "sqlite")
    who = SandboxPractitioner(
        idnps="810100050075",
        family="THOMAS",
        sites=[SandboxSite(idnst="1010000024", line="900 route de Paris", city="VIRIAT", postcode="01440")],
    )
    with SandboxServer(SandboxConfig(vendor_id="s", practitioners=[who], churn_rate=0.0)) as good:
        assert run("vendors", "add", "s", "--base-url", good.fhir_base).exit_code == 0
        r = run("vendors", "check", "s", "--idnps", "810100050075", "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["failed"] == []
    broken = who.model_copy(update={"sites": [SandboxSite(idnst="1010000024", postcode="1440")]})  # bad postcode
    with SandboxServer(SandboxConfig(vendor_id="s", practitioners=[broken], churn_rate=0.0)) as bad:
        assert run("vendors", "add", "s", "--base-url", bad.fhir_base).exit_code == 0
        r = run("vendors", "check", "s", "--idnps", "810100050075")
        assert r.exit_code == 1 and "requirement 40" in r.output and "requirement 38" in r.output


def test_bench_refuses_a_backend_it_cannot_measure(monkeypatch: pytest.MonkeyPatch) -> None:
    """`dispo bench --backend` names one of the two backends, and Elasticsearch needs a cluster to measure."""
    monkeypatch.delenv("DISPO_ES_URL", raising=False)
    r = run("bench", "search", "--backend", "elasticsearch")
    assert r.exit_code == 2 and "DISPO_ES_URL" in r.output
    r = run("bench", "search", "--backend", "solr")
    assert r.exit_code == 2 and "backends: sqlite, elasticsearch" in r.output


def test_accounts_are_granted_revoked_and_audited_from_the_command_line(env: Path) -> None:
    assert run("accounts", "create", "810100050075", "--idnps", "--name", "Pauline RICART").exit_code == 0
    assert run("accounts", "grant", "810100050075", "regulator", "-t", "01", "-t", "69").exit_code == 0
    refused = run("accounts", "grant", "810100050075", "regulator")
    assert refused.exit_code == 2 and "name at least one" in refused.output
    assert run("accounts", "grant", "810100050075", "vendor").exit_code == 2  # a machine role
    assert run("accounts", "grant", "sas-nobody", "analyst").exit_code == 1
    assert run("accounts", "revoke", "810100050075", "regulator", "--scope", "69").exit_code == 0
    shown = json.loads(run("accounts", "show", "810100050075").output)
    assert [(g["role"], g["territories"]) for g in shown["grants"]] == [("regulator", ["01"])]
    audit = json.loads(run("accounts", "audit", "--json").output)
    assert [(e["action"], e.get("territories")) for e in audit] == [
        ("revoked", ["69"]),
        ("granted", ["01", "69"]),
        ("created", None),
    ]
    assert all(e["actor"].startswith("cli:") for e in audit)
    listed = run("accounts", "list", "--territory", "01")
    assert "Pauline RICART" in listed.output and "regulator (01)" in listed.output
    gone = run("accounts", "revoke", "810100050075", "regulator")
    assert gone.exit_code == 0 and "no role left" in gone.output
