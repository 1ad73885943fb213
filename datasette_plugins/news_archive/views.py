"""The plugin's pages and JSON: parse the request, check permissions, call `archive`, render.

Errors are raised as Datasette's own exceptions (BadRequest 400, Forbidden 403, NotFound 404): Datasette answers
them as `{"ok": false, "error": ..., "status": ...}` on `.json` paths (Forbidden and NotFound through `json_errors`) and
with its error page otherwise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from datasette import Response
from datasette.utils import add_cors_headers, tilde_decode
from datasette.utils.asgi import BadRequest, Forbidden, NotFound

from archive import ArchiveError, ArticleNotFound, IndexCorrupt, IndexMissing
from archive import params as rules

from .archives import Busy, archives
from .permissions import ensure_can_view


class Unavailable(BadRequest):
    """The archive cannot answer (no index yet, corrupt index): 503, with the library's message."""

    status = 503


@dataclass
class SearchParams:
    q: str = ""
    k: int = rules.DEFAULT_K
    mode: str = "hybrid"
    outlet: str = ""
    since: str = ""
    until: str = ""
    rerank: bool = False

    def filters(self) -> dict:
        return {"outlet": self.outlet or None, "since": self.since or None, "until": self.until or None}


def checked(check, *args):
    """A rule from `archive.params` (imported as `rules`), its ArchiveError answered as 400."""
    try:
        return check(*args)
    except ArchiveError as e:
        raise BadRequest(str(e)) from None


def parse_k(value: str | None) -> int:
    return checked(rules.check_k, value)


def parse_id(value: str) -> int:
    """An article id from the path: digits only (after the permission check, so it reveals nothing)."""
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BadRequest("the article id must be a whole number")
    return int(value)


def parse_date(value: str | None, name: str) -> str:
    return checked(rules.parse_date, value, name) or ""


def search_params(args) -> SearchParams:
    q = (args.get("q") or "").strip()
    q = checked(rules.check_query, q) if q else ""
    mode = checked(rules.check_mode, args.get("mode"))
    return SearchParams(
        q,
        parse_k(args.get("k")),
        mode,
        (args.get("outlet") or "").strip(),
        parse_date(args.get("since"), "since"),
        parse_date(args.get("until"), "until"),
        parse_rerank(args.getlist("rerank")),
    )


def parse_rerank(values: list[str]) -> bool:
    """rerank=1 or 0 (the form sends a hidden 0 before its checkbox's 1: the last wins); absent: the default
    (on only where a GPU is present and the re-ranker installed)."""
    if not values:
        from archive.rerank import default_on

        return default_on()
    value = values[-1].strip().lower()
    if value not in ("1", "0", "true", "false", "on", "off"):
        raise BadRequest("rerank must be 1 or 0")
    return value in ("1", "true", "on")


async def archive_for(datasette, request):
    """(database name, ArchiveHandle) for the request's database, after the permission check."""
    route = tilde_decode(request.url_vars["database"])
    try:
        db = datasette.get_database(route=route)
    except KeyError:
        raise NotFound("Database not found") from None
    await ensure_can_view(datasette, request.actor, db.name)
    handle = await archives(datasette).aget(db.name)
    if handle is None:
        raise NotFound(f"{db.name} is not a news archive")
    return db.name, handle


async def library_call(handle, fn, *args, **kwargs):
    try:
        return await handle.call(fn, *args, **kwargs)
    except Busy:
        raise  # (answered by `json_errors`: 503 with Retry-After)
    except ArticleNotFound as e:
        raise NotFound(str(e)) from None
    except (IndexMissing, IndexCorrupt) as e:
        raise Unavailable(str(e)) from None
    except ArchiveError as e:
        raise BadRequest(str(e)) from None


def json_response(datasette, body: dict, status: int = 200) -> Response:
    headers = {}
    if datasette.cors:
        add_cors_headers(headers)
    return Response.json(body, status=status, headers=headers)


def json_errors(view):
    """Datasette answers a `.json` path's BadRequest (400, 503) with JSON itself, but not Forbidden (its
    `forbidden` hook renders HTML) nor NotFound (its 404 handler redirects %-encoded paths): on a `.json` path
    answer those two as `{"ok": false, "error": ..., "status": ...}` as well. A busy archive (a wait past the
    time budget) is answered 503 with Retry-After, as JSON or Datasette's error page."""

    @functools.wraps(view)
    async def wrapper(datasette, request):
        try:
            return await view(datasette, request)
        except Busy as e:
            return await busy_response(datasette, request, e)
        except (Forbidden, NotFound) as e:
            if not wants_json(request):
                raise
            body = {"ok": False, "error": str(e.args[0]) if e.args else "", "status": e.status}
            return json_response(datasette, body, e.status)

    return wrapper


async def busy_response(datasette, request, busy: Busy) -> Response:
    headers = {"Retry-After": str(busy.retry_after)}
    if wants_json(request):
        response = json_response(datasette, {"ok": False, "error": str(busy), "status": 503}, 503)
        response.headers.update(headers)
        return response
    context = {"ok": False, "error": str(busy), "status": 503, "title": "Busy"}
    html = await datasette.render_template("error.html", context, request=request)
    return Response.html(html, status=503, headers=headers)


def wants_json(request) -> bool:
    return bool(request.url_vars.get("format"))


async def outlets(datasette, database: str) -> list[str]:
    rows = await datasette.get_database(database).execute(
        "select outlet from articles where outlet is not null and outlet != '' "
        "group by outlet order by count(*) desc, outlet limit 500"
    )
    return [r[0] for r in rows]


@json_errors
async def semantic(datasette, request):
    """/<db>/-/semantic and /<db>/-/semantic.json"""
    database, handle = await archive_for(datasette, request)
    params = search_params(request.args)
    if wants_json(request) and not params.q:
        raise BadRequest("q is required")
    results = []
    loading = await handle.glance(lambda arc: arc.loading())  # a load running behind the server: say how far
    if params.q:
        try:
            results = await library_call(
                handle,
                lambda arc: arc.search(
                    params.q, k=params.k, mode=params.mode, rerank=params.rerank, **params.filters()
                ),
            )
        except Unavailable:
            if not loading:  # a load that has not saved its first index yet: no results so far, not an error
                raise
    if wants_json(request):
        return json_response(
            datasette, {"query": params.q, "results": [r.to_dict() for r in results], "loading": loading}
        )
    context = {
        "database": database,
        "params": params,
        "modes": rules.MODES,
        "max_k": rules.MAX_K,
        "outlets": await outlets(datasette, database),
        "results": results,
        "loading": loading,
        "links": result_links(datasette, database, results),
    }
    return await render(datasette, request, "news_archive_semantic.html", context)


@json_errors
async def related(datasette, request):
    """/<db>/articles/<id>/-/related and its .json"""
    database, handle = await archive_for(datasette, request)
    k = parse_k(request.args.get("k"))
    article_id = parse_id(request.url_vars["id"])
    article, results = await library_call(handle, lambda arc: (arc.article(article_id), arc.related(article_id, k=k)))
    if wants_json(request):
        return json_response(datasette, {"query": str(article_id), "results": [r.to_dict() for r in results]})
    context = {
        "database": database,
        "article": article,
        "k": k,
        "max_k": rules.MAX_K,
        "results": results,
        "article_url": datasette.urls.row(database, "articles", str(article_id)),
        "links": result_links(datasette, database, results),
    }
    return await render(datasette, request, "news_archive_related.html", context)


def semantic_path(datasette, database: str) -> str:
    return datasette.urls.database(database) + "/-/semantic"


def related_path(datasette, database: str, article_id) -> str:
    return datasette.urls.row(database, "articles", str(article_id)) + "/-/related"


def result_links(datasette, database: str, results) -> dict:
    return {
        r.id: {
            "row": datasette.urls.row(database, "articles", str(r.id)),
            "related": related_path(datasette, database, r.id),
        }
        for r in results
    }


async def render(datasette, request, template: str, context: dict) -> Response:
    database = context["database"]
    context |= {
        "semantic_url": semantic_path(datasette, database),
        "table_url": datasette.urls.table(database, "articles"),
    }
    return Response.html(await datasette.render_template(template, context, request=request))
