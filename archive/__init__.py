"""A searchable news-article archive with semantic retrieval: SQLite store, FAISS index, Datasette plugin."""

from .api import Archive, LoadReport, LoadStopped, VerifyReport
from .models import ArchiveError, Article, Rejection, Result, SourceError

__all__ = [
    "Archive",
    "ArchiveError",
    "Article",
    "LoadReport",
    "LoadStopped",
    "Rejection",
    "Result",
    "SourceError",
    "VerifyReport",
]
