"""The run store: run records in SQL (SQLite or PostgreSQL) and the database connections behind it."""
