"""Who may see an archive: the same checks Datasette makes before showing the `articles` table."""

from __future__ import annotations

from datasette.utils.asgi import Forbidden

DENIED = "You do not have permission to view this archive"


def archive_permissions(database: str) -> list:
    """Table, then database, then instance: the first one that has an opinion decides (Datasette's cascade)."""
    return [("view-table", (database, "articles")), ("view-database", database), "view-instance"]


async def ensure_can_view(datasette, actor, database: str) -> None:
    """Raise Forbidden (saying nothing about the archive) unless the actor may view `articles`."""
    if hasattr(datasette, "ensure_permissions"):  # Datasette 0.65 and early 1.0 alphas
        try:
            await datasette.ensure_permissions(actor, archive_permissions(database))
        except Forbidden:
            raise Forbidden(DENIED) from None
        return
    from datasette.resources import TableResource  # Datasette >= 1.0a20

    if not await datasette.allowed(action="view-table", resource=TableResource(database, "articles"), actor=actor):
        raise Forbidden(DENIED)


async def can_view(datasette, actor, database: str) -> bool:
    try:
        await ensure_can_view(datasette, actor, database)
    except Forbidden:
        return False
    return True


def sql_functions_allowed(datasette, database: str) -> bool:
    """SQL functions have no actor to check, so they refuse to work when `articles` has its own `allow` block.

    Anyone who can run SQL against the database already passed view-database; a table-level restriction is the
    one case where the functions could show more than the actor may see. (Restrictions made by other plugins'
    permission_allowed hooks cannot be seen from here; see metadata.yml.)
    """
    allow = datasette.metadata("allow", database=database, table="articles", fallback=False)
    return allow is None or allow is True
