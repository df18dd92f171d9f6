-- Keyword search's terms come from the service's own tokenizer (services/ragmeshd/search/keywords.py:
-- Snowball English stop words and stemmer) for both backends, instead of PostgreSQL's parser.
-- Each collection gets search_terms_<id>: every term's id and document frequency, updated by
-- every write in the same transaction, so a query reads it instead of counting passages.
-- Passages hold their term ids and frequencies as uncompressed integer arrays.
--
-- Existing passages are converted here, in SQL: words split on anything but letters and
-- digits, lower-cased, then the english_stem dictionary, which is the same Snowball English
-- stemmer with the same stop list. (For non-ASCII letters a C-locale database's [:alnum:]
-- may split words differently from the service's tokenizer; rewriting a document fixes it.)
-- passage_terms becomes the total length in terms (it was the number of distinct lexemes).
DO $$
DECLARE
    id bigint;
BEGIN
    FOR id IN SELECT c.id FROM search_collections AS c LOOP
        EXECUTE format($sql$
            CREATE TEMPORARY TABLE counted ON COMMIT DROP AS
                SELECT document_id, passage_index, lexemes[1] AS term, count(*)::integer AS n
                FROM search_passages_%1$s,
                     regexp_split_to_table(lower(text), '[^[:alnum:]]+') AS word,
                     ts_lexize('english_stem', word) AS lexemes
                WHERE word <> '' AND cardinality(lexemes) > 0
                GROUP BY 1, 2, 3;
            CREATE TABLE search_terms_%1$s (
                term text PRIMARY KEY,
                id integer GENERATED ALWAYS AS IDENTITY UNIQUE,
                passages integer NOT NULL CHECK (passages >= 0),
                max_frequency integer NOT NULL,
                min_length integer NOT NULL
            );
            INSERT INTO search_terms_%1$s (term, passages, max_frequency, min_length)
                SELECT c.term, count(*), max(c.n), min(l.length)
                FROM counted AS c JOIN (
                    SELECT document_id, passage_index, sum(n)::integer AS length
                    FROM counted GROUP BY 1, 2
                ) AS l USING (document_id, passage_index)
                GROUP BY c.term ORDER BY c.term;
            ALTER TABLE search_passages_%1$s DROP COLUMN terms;
            ALTER TABLE search_passages_%1$s
                ADD COLUMN terms integer[] STORAGE PLAIN NOT NULL DEFAULT '{}',
                ADD COLUMN frequencies integer[] STORAGE PLAIN NOT NULL DEFAULT '{}',
                ADD COLUMN length integer NOT NULL DEFAULT 0;
            UPDATE search_passages_%1$s AS p
                SET terms = s.terms, frequencies = s.frequencies, length = s.length
                FROM (
                    SELECT c.document_id, c.passage_index, array_agg(t.id ORDER BY t.id) AS terms,
                           array_agg(c.n ORDER BY t.id) AS frequencies, sum(c.n)::integer AS length
                    FROM counted AS c JOIN search_terms_%1$s AS t ON t.term = c.term
                    GROUP BY 1, 2
                ) AS s
                WHERE p.document_id = s.document_id AND p.passage_index = s.passage_index;
            ALTER TABLE search_passages_%1$s
                ALTER COLUMN terms DROP DEFAULT,
                ALTER COLUMN frequencies DROP DEFAULT,
                ALTER COLUMN length DROP DEFAULT;
            CREATE INDEX search_passages_%1$s_terms ON search_passages_%1$s USING gin (terms);
            UPDATE search_collections SET passage_terms =
                (SELECT coalesce(sum(length), 0) FROM search_passages_%1$s)
                WHERE search_collections.id = %1$s;
            DROP TABLE counted;
        $sql$, id);
    END LOOP;
END
$$;

ALTER TABLE search_collections DROP COLUMN text_search_config;
