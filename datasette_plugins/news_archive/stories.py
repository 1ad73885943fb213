"""The story pages: `/<db>/-/stories` (the index) and `/<db>/-/stories/<id>` (a timeline), each with `.json`.

Parse, check permissions (views.archive_for), call archive.stories, render; nothing else.
"""

from __future__ import annotations

from datasette.utils.asgi import BadRequest, NotFound

from archive import stories

from .views import archive_for, json_errors, json_response, library_call, outlets, parse_date, render, wants_json

PAGE = 50
MAX_OFFSET = 1_000_000


def stories_path(datasette, database: str) -> str:
    return datasette.urls.database(database) + "/-/stories"


def story_path(datasette, database: str, story_id) -> str:
    return f"{stories_path(datasette, database)}/{story_id}"


async def story_url_for(datasette, database: str, article_id: int) -> str | None:
    """The article's story page, or None (no story tables, or no story for it yet)."""
    db = datasette.get_database(database)
    if not await db.table_exists("article_story"):
        return None
    rows = await db.execute("select story_id from article_story where article_id = ?", [article_id])
    first = rows.first()
    return story_path(datasette, database, first[0]) if first else None


def _whole(value: str | None, name: str, default: int, top: int) -> int:
    if value in (None, ""):
        return default
    if not (value.isascii() and value.isdigit()) or not 0 <= int(value) <= top:
        raise BadRequest(f"{name} must be a whole number from 0 to {top}")
    return int(value)


def index_params(args) -> dict:
    sort = args.get("sort") or "newest"
    if sort not in stories.SORTS:
        raise BadRequest(f"sort must be one of {', '.join(stories.SORTS)}")
    return {
        "since": parse_date(args.get("since"), "since") or None,
        "until": parse_date(args.get("until"), "until") or None,
        "outlet": (args.get("outlet") or "").strip() or None,
        "min_size": _whole(args.get("min_size"), "min_size", 1, 1_000_000),
        "sort": sort,
        "offset": _whole(args.get("offset"), "offset", 0, MAX_OFFSET),
    }


@json_errors
async def story_index(datasette, request):
    """/<db>/-/stories and /<db>/-/stories.json"""
    database, handle = await archive_for(datasette, request)
    params = index_params(request.args)
    rows = await library_call(handle, lambda arc: stories.list_stories(arc.db, limit=PAGE, **params))
    if wants_json(request):
        return json_response(datasette, {"stories": rows, "offset": params["offset"], "limit": PAGE})
    base = stories_path(datasette, database)
    context = {"database": database, "params": params, "stories": rows, "page": PAGE, "sorts": list(stories.SORTS),
               "outlets": await outlets(datasette, database), "stories_url": base,
               "links": {r["id"]: story_path(datasette, database, r["id"]) for r in rows}}  # fmt: skip
    return await render(datasette, request, "news_archive_stories.html", context)


@json_errors
async def story(datasette, request):
    """/<db>/-/stories/<id> and its .json"""
    database, handle = await archive_for(datasette, request)
    raw = request.url_vars["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise BadRequest("the story id must be a whole number")
    found = await library_call(handle, lambda arc: stories.story(arc.db, int(raw)))
    if found is None:
        raise NotFound(f"no story {raw}")
    if wants_json(request):
        return json_response(datasette, found)
    rows = {a["id"]: datasette.urls.row(database, "articles", str(a["id"])) for a in found["articles"]}
    context = {"database": database, "story": found, "rows": rows, "stories_url": stories_path(datasette, database)}
    return await render(datasette, request, "news_archive_story.html", context)
