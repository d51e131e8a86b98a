"""The served API against its own OpenAPI, for each role: schemathesis generates requests from the document (valid
ones, and invalid ones the API must refuse) and checks every answer: never a server error, a documented status, a
documented content type, a body matching the documented schema.

Each role runs on its own directory loaded with the samples, on SQLite only: the checks are about the HTTP layer,
which is the same over both backends (their differences are covered by the other test modules), and running every
role twice would double the minute this takes. The examples are bounded and derandomized, so CI runs the same cases
every time; a summary line per role says how many cases ran and how many answered 5xx.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from support import api_settings, headers, person, signed_in

from access.roles import Grant, Role
from api.app import create_app
from core.settings import Settings
from editor_sandbox.server import ThreadedServer
from indexer.backend import Backend

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 15  # per operation and role: the file runs in about a minute
# A picture of 4000 px squared takes a second to draw: enough that so many examples of it would be the whole run.
# The machine roles, and a national administrator signed in (a session, reaching the accounts' routes and every route
# an analyst reaches).
CALLERS = [Role.regulator, Role.maintainer, Role.vendor, Role.national_admin]
SLOW = {"GET /v1/coverage/map.{fmt}", "GET /v1/coverage/chart.{fmt}"}


@dataclass
class Tally:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[str, str] = field(default_factory=dict)  # operation and check -> the first report of it

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def run_operation(operation: schemathesis.APIOperation, base_url: str, auth: dict[str, str], tally: Tally) -> None:
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=EXAMPLES // 4 if operation.label in SLOW else EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # failures are tallied, not raised: nothing to shrink
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, headers=auth, timeout=30)
        tally.cases += 1
        tally.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=auth)
        except schemathesis.errors.FailureGroup as group:
            for failure in group.exceptions:
                tally.failures.setdefault(f"{operation.label}: {failure.title}", str(group)[:3000])

    check()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("role", CALLERS, ids=str)
def test_every_answer_conforms_to_the_openapi_for_every_role(loaded: Backend, settings: Settings, role: Role) -> None:
    if role is Role.national_admin:  # a person: their session's cookie and CSRF token
        auth = signed_in(loaded, person(loaded, "sas-national", Grant(Role.national_admin)))
    else:
        auth = headers(role)
    with ThreadedServer(create_app(api_settings(settings), loaded), name="api") as api:
        schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
        tally = Tally()
        for result in schema.get_all_operations():
            run_operation(result.ok(), api.url, auth, tally)
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(tally.statuses.items()))
    print(
        f"\nschemathesis {role.value}: {tally.cases} cases, {tally.server_errors} answered 5xx, "
        f"{len(tally.failures)} failing checks ({statuses})"
    )
    assert tally.cases > 100
    assert not tally.failures, "\n\n".join(f"{where}\n{report}" for where, report in tally.failures.items())
