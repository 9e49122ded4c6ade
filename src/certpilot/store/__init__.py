"""Storage: SQLAlchemy tables, the database setup, migrations and repositories.

ORM rows never leave this package: repositories hand out domain values.
"""
