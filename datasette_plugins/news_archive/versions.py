"""An article's earlier versions on its row page: the count, the list and the diff to the previous one.

The diff comes from `archive.versions` as (op, text) segments; row.html escapes them like any article text.
"""

from __future__ import annotations

from archive import versions

from .permissions import can_view

TABLE = "article_versions"


async def versions_for(datasette, actor, database: str, article_id: int) -> versions.History | None:
    """The article's earlier versions (None when it has none, or the actor may not view `article_versions`),
    read on Datasette's own read connection."""
    if not await can_view(datasette, actor, database, TABLE):  # an allow block on the table hides them here too
        return None
    db = datasette.get_database(database)
    return await db.execute_fn(lambda conn: versions.history(conn, article_id))
