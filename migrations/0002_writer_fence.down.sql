DROP FUNCTION journal_assert(boolean, text);
DROP FUNCTION journal_burn(text, bigint, bigint);
DROP FUNCTION journal_begin(text, bigint, bigint);
CREATE TABLE journal_state (
    id         int    PRIMARY KEY CHECK (id = 1),
    last_batch bigint NOT NULL
);
INSERT INTO journal_state (id, last_batch)
SELECT 1, coalesce(max(last_batch), 0) FROM journal_writers;
DROP TABLE journal_writers;
