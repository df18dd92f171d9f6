"""The statement that sets a pooled transaction's settings (postgres/transaction_pool.py)."""

from __future__ import annotations

from ragmeshd.postgres.transaction_pool import settings_statement


def test_settings_become_one_local_set_config_per_setting() -> None:
    statement = settings_statement({"statement_timeout": "30000", "hnsw.ef_search": "100"})
    assert statement == (
        "SELECT set_config('statement_timeout', '30000', true),"
        " set_config('hnsw.ef_search', '100', true)"
    )


def test_quotes_in_a_value_stay_inside_its_literal() -> None:
    statement = settings_statement({"application_name": "it's"})
    assert statement == "SELECT set_config('application_name', 'it''s', true)"
