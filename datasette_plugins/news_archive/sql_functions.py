"""`semantic_search(query[, k])` and `related_articles(article_id[, k])` for SQL users and canned queries.

Each returns a JSON array of {"article_id", "score", "chunk_id"}, best first, for `json_each` to join back to
`articles`:

    select a.id, a.title, a.outlet, a.published, r.value ->> 'score' as score
    from json_each(semantic_search(:q, 10)) r join articles a on a.id = r.value ->> 'article_id'

They run inside Datasette's SQL thread, through that thread's reader of the archive (its own connection),
in a turn of the archive's gate like the views' calls (which never wait on Datasette while holding a turn, so
the two cannot deadlock); a wait past the time budget fails the query. A bad argument raises, which SQLite
reports as a failed query (Python's sqlite3 cannot pass the message on, so the reason is logged and the rules
are in metadata.yml: query 1..1000 characters, k 1..100).
"""

from __future__ import annotations

import json
import logging

from archive import params

from .permissions import sql_functions_allowed

log = logging.getLogger(__name__)


class SQLFunctionError(ValueError):
    pass


def _as_int(value, what: str) -> int:
    """SQL values arrive as int, or as text from a canned query's form."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int):
        raise SQLFunctionError(f"{what} must be an integer, not {value!r}")
    return value


def _check_k(k) -> int:
    k = _as_int(k, "k")
    if not 1 <= k <= params.MAX_K:
        raise SQLFunctionError(f"k must be from 1 to {params.MAX_K}, not {k}")
    return k


def _hits(results) -> list[dict]:
    return [{"article_id": r.id, "score": r.score, "chunk_id": r.chunk_id} for r in results]


def semantic_hits(arc, query: str, k: int) -> list[dict]:
    """Semantic search through the Archive (its query encoder: never torch in a server), best chunk with each."""
    return _hits(arc.search(query, k=k, mode="semantic"))


def related_hits(arc, article_id: int, k: int) -> list[dict]:
    """Related coverage, with the chunk whose text is the passage shown."""
    return _hits(arc.related(article_id, k=k))


def make_functions(datasette, database: str, handle_for):
    """The two SQL functions for one database; `handle_for()` gives its ArchiveHandle (opened lazily)."""

    def guarded(name, fn):
        def sql_function(arg, k=params.DEFAULT_K):
            try:
                if not sql_functions_allowed(datasette, database):
                    raise SQLFunctionError(
                        f"{name}() is off: the articles table has an allow block "
                        f"(use /{database}/-/semantic.json, which checks who is asking)"
                    )
                handle = handle_for()
                if handle is None:
                    raise SQLFunctionError(f"{database} is not a news archive")
                return json.dumps(handle.run(fn, arg, _check_k(k)))
            except Exception as e:
                log.warning("%s(%r, %r) failed: %s", name, arg, k, e)
                raise

        return sql_function

    def search(arc, query, k):
        if not isinstance(query, str) or not query.strip() or len(query) > params.MAX_QUERY_CHARS:
            raise SQLFunctionError(f"query must be text of 1 to {params.MAX_QUERY_CHARS} characters")
        return semantic_hits(arc, query, k)

    def related(arc, article_id, k):
        return related_hits(arc, _as_int(article_id, "article_id"), k)

    return {
        "semantic_search": guarded("semantic_search", search),
        "related_articles": guarded("related_articles", related),
    }


def register(conn, datasette, database: str, handle_for) -> None:
    for name, fn in make_functions(datasette, database, handle_for).items():
        conn.create_function(name, 1, fn)
        conn.create_function(name, 2, fn)
