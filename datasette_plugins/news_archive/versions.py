"""An article's earlier versions on its row page: the count, the list and the diff to the previous one.

The diff comes from `archive.versions` as (op, text) segments; row.html escapes them like any article text.
"""

from __future__ import annotations

from datasette.utils.asgi import Forbidden

from archive import versions

TABLE = "article_versions"


async def versions_for(datasette, actor, database: str, article_id: int) -> versions.History | None:
    """The article's earlier versions (None when it has none, or the actor may not view `article_versions`),
    read on Datasette's own read connection."""
    if not await _may_view(datasette, actor, database):
        return None
    db = datasette.get_database(database)
    return await db.execute_fn(lambda conn: versions.history(conn, article_id))


async def _may_view(datasette, actor, database: str) -> bool:
    """Datasette's own check for the table (an allow block on it hides the versions here too)."""
    if hasattr(datasette, "ensure_permissions"):  # Datasette 0.65 and early 1.0 alphas
        try:
            await datasette.ensure_permissions(actor, [("view-table", (database, TABLE)), ("view-database", database)])
        except Forbidden:
            return False
        return True
    from datasette.resources import TableResource  # Datasette >= 1.0a20

    return await datasette.allowed(action="view-table", resource=TableResource(database, TABLE), actor=actor)
