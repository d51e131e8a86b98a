"""The regulators' web page (served at `/`, local assets only) and the small lookups it needs."""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from api.deps import LOOKUP_READERS, public, require
from api.problems import problems
from core.geo import gazetteer
from core.text import fold
from search.specialties import specialty_labels

router = APIRouter(tags=["web page"])
PAGE = "the page holds no data; its calls carry the caller's session or token"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page(
    _: Annotated[None, Depends(public(PAGE))],
) -> str:
    # The page itself holds no data: every call it makes carries the regulator's token.
    return (resources.files("api") / "static" / "index.html").read_text(encoding="utf-8")


@router.get("/analysts", response_class=HTMLResponse, include_in_schema=False)
def analysts_page(
    _: Annotated[None, Depends(public(PAGE))],
) -> str:
    # Like the regulators' page: no data in it, every call carries the analyst's token.
    return (resources.files("api") / "static" / "analysts.html").read_text(encoding="utf-8")


@router.get("/espace", response_class=HTMLResponse, include_in_schema=False)
def space_page(_: Annotated[None, Depends(public(PAGE))]) -> str:
    # The practitioners' space: no data in it either; its calls carry the practitioner's (or delegate's) session.
    return (resources.files("api") / "static" / "space.html").read_text(encoding="utf-8")


@router.get("/assets/pages.css", include_in_schema=False)
def pages_css(_: Annotated[None, Depends(public("the pages' shared style sheet: no data"))]) -> Response:
    css = (resources.files("api") / "static" / "pages.css").read_text(encoding="utf-8")
    return Response(css, media_type="text/css; charset=utf-8", headers={"Cache-Control": "public, max-age=3600"})


@router.get("/structures", response_class=HTMLResponse, include_in_schema=False)
def structures_page(_: Annotated[None, Depends(public(PAGE))]) -> str:
    # The structure managers' page (a CPTS's members, an SOS association's participation and places): no data in it.
    return (resources.files("api") / "static" / "structures.html").read_text(encoding="utf-8")


@router.get("/imports", response_class=HTMLResponse, include_in_schema=False)
def imports_page(_: Annotated[None, Depends(public(PAGE))]) -> str:
    # The maintainers' page of the national files' imports and what they changed: no data in it either.
    return (resources.files("api") / "static" / "imports.html").read_text(encoding="utf-8")


class SpecialtyLabel(BaseModel):
    code: str
    label: str


@router.get(
    "/v1/specialties",
    response_model=list[SpecialtyLabel],
    summary="Savoir-faire codes and labels",
    responses=problems(401, 403),
)
def specialties(_: Annotated[Any, Depends(require(*LOOKUP_READERS))]) -> list[SpecialtyLabel]:
    labels = specialty_labels()
    return [SpecialtyLabel(code=code, label=labels[code]) for code in sorted(labels, key=lambda c: fold(labels[c]))]


class PlaceSuggestion(BaseModel):
    label: str
    postcode: str | None
    insee: str | None
    lat: float
    lon: float


@router.get(
    "/v1/places/suggest",
    response_model=list[PlaceSuggestion],
    summary="Communes and postcodes",
    responses=problems(401, 403, 422),
)
def suggest(
    _: Annotated[Any, Depends(require(*LOOKUP_READERS))],
    q: Annotated[str, Query(min_length=2, max_length=80)],
    limit: Annotated[int, Query(ge=1, le=20)] = 8,
) -> list[PlaceSuggestion]:
    """Communes whose name starts with the text, or whose postcode starts with the digits (local tables)."""
    gaz = gazetteer()
    text = fold(q)
    out: list[PlaceSuggestion] = []
    if text.isdigit():
        for postcode in sorted(p for p in gaz.postcodes if p.startswith(text))[:limit]:
            area = gaz.postcodes[postcode]
            names = ", ".join(gaz.communes[i].name.title() for i in area.communes[:3])
            out.append(
                PlaceSuggestion(label=f"{postcode} {names}", postcode=postcode, insee=None, lat=area.lat, lon=area.lon)
            )
        return out
    for commune in sorted(gaz.communes.values(), key=lambda c: (len(c.name), c.name)):
        if fold(commune.name).startswith(text):
            postcode = commune.postcodes[0] if commune.postcodes else None
            out.append(
                PlaceSuggestion(
                    label=f"{commune.name.title()} ({postcode or commune.department})",
                    postcode=postcode,
                    insee=commune.insee,
                    lat=commune.lat,
                    lon=commune.lon,
                )
            )
            if len(out) >= limit:
                break
    return out
