"""Database backends of the platform (``masplatform.db.sqlite3``: the embedded default's SQLite)."""
