"""Datasette plugin for the news archive: semantic search, related coverage, SQL functions (see news_archive.py)."""
