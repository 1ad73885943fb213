"""Who may see an archive: the same checks Datasette makes before showing the `articles` table."""

from __future__ import annotations

from datasette.utils.asgi import Forbidden

DENIED = "You do not have permission to view this archive"


def archive_permissions(database: str, table: str = "articles") -> list:
    """Table, then database, then instance: the first one that has an opinion decides (Datasette's cascade)."""
    return [("view-table", (database, table)), ("view-database", database), "view-instance"]


async def ensure_can_view(datasette, actor, database: str, table: str = "articles") -> None:
    """Raise Forbidden (saying nothing about the archive) unless the actor may view `articles` (or `table`)."""
    if hasattr(datasette, "ensure_permissions"):  # Datasette 0.65 and early 1.0 alphas
        try:
            await datasette.ensure_permissions(actor, archive_permissions(database, table))
        except Forbidden:
            raise Forbidden(DENIED) from None
        return
    from datasette.resources import TableResource  # Datasette >= 1.0a20

    if not await datasette.allowed(action="view-table", resource=TableResource(database, table), actor=actor):
        raise Forbidden(DENIED)


async def can_view(datasette, actor, database: str, table: str = "articles") -> bool:
    try:
        await ensure_can_view(datasette, actor, database, table)
    except Forbidden:
        return False
    return True


def sql_functions_allowed(datasette, database: str) -> bool:
    """SQL functions have no actor to check, so they refuse to work when `articles` has its own `allow` block.

    Anyone who can run SQL against the database already passed view-database; a table-level restriction is the
    one case where the functions could show more than the actor may see. (Restrictions made by other plugins'
    permission_allowed hooks cannot be seen from here; see metadata.yml.)
    """
    allow = articles_allow(datasette, database)
    return allow is None or allow is True


def articles_allow(datasette, database: str):
    """The `allow` block of the `articles` table, found the way Datasette finds tables: without regard to case
    (`tables: {Articles: {allow: ...}}` guards `articles` too)."""
    tables = ((datasette.metadata() or {}).get("databases") or {}).get(database, {}).get("tables") or {}
    for name, config in tables.items():
        if name.lower() == "articles" and isinstance(config, dict) and "allow" in config:
            return config["allow"]
    return None


def reads_articles(datasette, database: str, query: str) -> bool:
    """Whether a canned query reads the archive: it names `articles` or one of the plugin's SQL functions."""
    canned = ((datasette.metadata() or {}).get("databases") or {}).get(database, {}).get("queries") or {}
    sql = canned.get(query, {}).get("sql", "") if isinstance(canned.get(query), dict) else str(canned.get(query, ""))
    sql = sql.lower()
    return "articles" in sql or "semantic_search" in sql or "related_articles" in sql


async def canned_query_allowed(datasette, actor, database: str, query: str) -> bool | None:
    """view-query of a canned query that reads the archive also needs the right to view `articles`; canned
    queries otherwise need only view-query, which table-level restrictions do not reach. None: no opinion."""
    if not reads_articles(datasette, database, query):
        return None
    return False if not await can_view(datasette, actor, database) else None
