"""Datasette hooks for the news archive; they only connect things (views.py, archives.py, permissions.py)."""

from __future__ import annotations

import asyncio
import os

from datasette import hookimpl

from . import stories as story_views
from . import views
from .archives import archives, has_archive_tables, validate_config
from .permissions import can_view, canned_query_allowed
from .sql_functions import register as register_sql_functions
from .versions import versions_for

DB = r"(?P<database>[^/]+)"


@hookimpl
def register_routes():
    return [
        (rf"^/{DB}/-/semantic(?P<format>\.json)?$", views.semantic),
        # Any id segment: a non-numeric one gets the plugin's own 400 rather than a bare 404.
        (rf"^/{DB}/articles/(?P<id>[^/]+)/-/related(?P<format>\.json)?$", views.related),
        (rf"^/{DB}/-/stories(?P<format>\.json)?$", story_views.story_index),
        (rf"^/{DB}/-/stories/(?P<id>[^/.]+)(?P<format>\.json)?$", story_views.story),
    ]


def _quiet_rich_tracebacks() -> None:
    """Datasette 0.65's error hook prints a rich traceback even for a plain 404 raised outside an `except`
    block, where rich itself raises, so every unknown URL answered 500 whenever rich is installed (and
    transformers installs it). Turn that console nicety off; the error pages are unchanged."""
    from datasette import handle_exception

    handle_exception.rich = None


def _one_thread_per_query() -> None:
    """A server answers many small queries at once, so each runs on one thread: two ONNX or OpenMP threads per
    query spin against the other queries' (8 clients, 2 cores: 12.3 -> 17.0 answers/s; one client's p50
    96 -> 60 ms). NEWS_ARCHIVE_THREADS or OMP_NUM_THREADS, when set, still decide."""
    os.environ.setdefault("NEWS_ARCHIVE_THREADS", "1")
    if not os.environ.get("OMP_NUM_THREADS"):
        import faiss

        faiss.omp_set_num_threads(1)


@hookimpl
def startup(datasette):
    _quiet_rich_tracebacks()
    _one_thread_per_query()

    async def inner():
        validate_config(datasette)
        registry = archives(datasette)
        for name in await asyncio.to_thread(registry.names):
            registry.get(name).warm_in_background()  # the model loads while the server starts answering

    return inner


@hookimpl
def permission_allowed(datasette, actor, action, resource):
    """Canned queries that read the archive follow the `articles` table's permissions (see permissions.py)."""
    if action != "view-query" or not isinstance(resource, tuple | list) or len(resource) != 2:
        return None

    async def inner():
        return await canned_query_allowed(datasette, actor, resource[0], resource[1])

    return inner


@hookimpl
def prepare_connection(conn, database, datasette):
    if has_archive_tables(conn):
        register_sql_functions(conn, datasette, database, lambda: archives(datasette).get(database))


async def visible_archive(datasette, actor, database: str) -> bool:
    return await archives(datasette).aget(database) is not None and await can_view(datasette, actor, database)


@hookimpl
def table_actions(datasette, actor, database, table):
    async def inner():
        if table != "articles" or not await visible_archive(datasette, actor, database):
            return []
        return [{"href": views.semantic_path(datasette, database), "label": "Semantic search"}]

    return inner


@hookimpl
def menu_links(datasette, actor):
    async def inner():
        names = [n for n in await asyncio.to_thread(archives(datasette).names) if await can_view(datasette, actor, n)]
        label = "Semantic search" if len(names) == 1 else "Semantic search: {}"
        return [{"href": views.semantic_path(datasette, n), "label": label.format(n)} for n in names]

    return inner


@hookimpl
def extra_css_urls(datasette):
    """The plugin's styles, a static file (pages and the article row page use na- classes only)."""
    return [datasette.urls.static_plugins("news_archive", "news_archive.css")]


@hookimpl
def extra_template_vars(view_name, database, table, request, datasette):
    """`news_archive_related_url`, `news_archive_story_url` and `news_archive_versions` (its earlier versions and
    the diff to the previous one) for an article's row page (row.html shows them)."""

    async def inner():
        pk = request.url_vars.get("pks", "") if request else ""
        if view_name != "row" or table != "articles" or not pk.isdigit():
            return {}
        if not await visible_archive(datasette, request.actor, database):
            return {}
        return {
            "news_archive_related_url": views.related_path(datasette, database, pk),
            "news_archive_story_url": await story_views.story_url_for(datasette, database, int(pk)),
            "news_archive_versions": await versions_for(datasette, request.actor, database, int(pk)),
        }

    return inner


@hookimpl
def row_actions(datasette, actor, database, table, row):
    """Datasette 1.0's row actions menu (0.65 has no such hook and never calls this)."""

    async def inner():
        if table != "articles" or not await visible_archive(datasette, actor, database):
            return []
        return [{"href": views.related_path(datasette, database, row["id"]), "label": "Find related coverage"}]

    return inner
