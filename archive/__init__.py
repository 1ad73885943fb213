"""A searchable news-article archive with semantic retrieval: SQLite store, FAISS index, Datasette plugin."""

from .api import Archive, LoadReport, LoadStopped, VerifyReport
from .index import IndexCorrupt, IndexMissing
from .models import ArchiveError, Article, Rejection, Result, SourceError
from .store import ArticleNotFound, NotAnArchive

__all__ = [
    "Archive",
    "ArchiveError",
    "Article",
    "ArticleNotFound",
    "IndexCorrupt",
    "IndexMissing",
    "LoadReport",
    "LoadStopped",
    "NotAnArchive",
    "Rejection",
    "Result",
    "SourceError",
    "VerifyReport",
]
