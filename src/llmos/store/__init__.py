"""Persistent stores: the database of users, API keys, events, profiles and conversation memory
(``db.py``, tables in ``models.py``, Alembic ``migrations/``; SQLite or PostgreSQL), and vector
indexes (``vectors.py``)."""
