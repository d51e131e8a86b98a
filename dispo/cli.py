"""The `dispo` command line: the root command, and the commands of each area added to it.

Each area keeps its commands in its own module (imports, the directory, the regulator search, vendors, the
slots they hold, aggregation, sandboxes, the API server, appointments, coverage, benchmarks); `dispo.console`
holds what they share. The console script is `dispo = "dispo.cli:main"`.
"""

from __future__ import annotations

import typer

from dispo import (
    accounts,
    aggregate,
    benchmarks,
    bookings,
    calendar,
    coverage,
    directory,
    imports,
    lrm,
    regulation,
    sandbox,
    server,
    slots,
    vendors,
)
from dispo.console import ReportingGroup

app = typer.Typer(
    cls=ReportingGroup, help="Dispo: national directory and availability index for the SAS.", no_args_is_help=True
)

# In the order `dispo --help` lists them (it shows single commands before groups).
app.command("sites")(directory.sites)
app.command("serve")(server.serve)
app.command("aggregate")(aggregate.aggregate)
app.command("sandbox")(sandbox.sandbox)
app.command("generate")(benchmarks.generate)
app.command("search")(regulation.search)
app.command("bench")(benchmarks.bench)
app.command("drill")(benchmarks.drill)
app.command("lrm-sandbox")(lrm.lrm_sandbox)
app.add_typer(imports.import_app, name="import")
app.add_typer(imports.imports_app, name="imports")
app.add_typer(directory.show_app, name="show")
app.add_typer(server.tokens_app, name="tokens")
app.add_typer(imports.participations_app, name="participations")
app.add_typer(directory.index_app, name="index")
app.add_typer(vendors.vendors_app, name="vendors")
app.add_typer(slots.slots_app, name="slots")
app.add_typer(bookings.appointments_app, name="appointments")
app.add_typer(regulation.audit_app, name="audit")
app.add_typer(coverage.coverage_app, name="coverage")
app.add_typer(lrm.lrm_app, name="lrm")
app.add_typer(accounts.accounts_app, name="accounts")
app.add_typer(calendar.calendar_app, name="calendar")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
