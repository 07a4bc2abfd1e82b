"""DB-API drivers and SQLAlchemy under the one SQL guard: ``core`` (a connection's database, the
verdict on a statement, row caps on fetches), ``sqlite`` (sqlite3), ``psycopg`` (psycopg 3),
``sqlalchemy`` (its event hooks).  Each is installed right after its library is imported."""
