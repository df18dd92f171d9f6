ALTER TABLE search_collections
    DROP COLUMN document_count,
    DROP COLUMN passage_count,
    DROP COLUMN passage_terms;
