-- Hardening of the journal (see persist/doc.go, "Batch markers").
--
-- One row per journal writer replaces journal_state. A process claims its
-- writer row at start (incarnation + 1); every batch begins with
-- journal_begin, which locks that row, refuses a superseded incarnation
-- (MS001), the batch id at the marker (MS002, "already committed") or below
-- it (MS004, a broken invariant) by raising an error, so the server aborts the whole transaction: a retry
-- racing a still-committing first attempt can never apply a batch twice.
-- Attempts of one batch id serialise on the row lock; the first to get it
-- decides. The batch counter continues across incarnations, so (writer,
-- batch) names one transaction forever.
CREATE TABLE journal_writers (
    writer      text        PRIMARY KEY,
    incarnation bigint      NOT NULL CHECK (incarnation > 0),
    last_batch  bigint      NOT NULL CHECK (last_batch >= 0),
    claimed_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO journal_writers (writer, incarnation, last_batch)
SELECT 'main', 1, last_batch FROM journal_state;
DROP TABLE journal_state;

CREATE FUNCTION journal_begin(w text, inc bigint, b bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cur_inc  bigint;
    cur_last bigint;
BEGIN
    SELECT incarnation, last_batch INTO cur_inc, cur_last
      FROM journal_writers WHERE writer = w FOR UPDATE;
    IF NOT FOUND OR cur_inc <> inc THEN
        RAISE EXCEPTION 'journal writer % incarnation % is superseded by %', w, inc, cur_inc
            USING ERRCODE = 'MS001';
    END IF;
    IF cur_last = b THEN
        RAISE EXCEPTION 'journal batch % of writer % is already committed', b, w
            USING ERRCODE = 'MS002';
    END IF;
    IF cur_last > b THEN
        RAISE EXCEPTION 'journal marker % of writer % is past batch %', cur_last, w, b
            USING ERRCODE = 'MS004';
    END IF;
    UPDATE journal_writers SET last_batch = b WHERE writer = w;
END $$;

-- journal_burn retires batch id b after the database refused it, so no
-- stale attempt of it can commit later: true means an attempt of b had
-- committed after all (the marker is already at or past b).
CREATE FUNCTION journal_burn(w text, inc bigint, b bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    cur_inc  bigint;
    cur_last bigint;
BEGIN
    SELECT incarnation, last_batch INTO cur_inc, cur_last
      FROM journal_writers WHERE writer = w FOR UPDATE;
    IF NOT FOUND OR cur_inc <> inc THEN
        RAISE EXCEPTION 'journal writer % incarnation % is superseded by %', w, inc, cur_inc
            USING ERRCODE = 'MS001';
    END IF;
    IF cur_last = b THEN
        RETURN true;
    END IF;
    IF cur_last > b THEN
        RAISE EXCEPTION 'journal marker % of writer % is past batch %', cur_last, w, b
            USING ERRCODE = 'MS004';
    END IF;
    UPDATE journal_writers SET last_batch = b WHERE writer = w;
    RETURN false;
END $$;

-- journal_assert aborts the batch when an invariant of ours is broken
-- (MS003): nothing of it is written, and the process stops.
CREATE FUNCTION journal_assert(ok boolean, what text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ok THEN
        RAISE EXCEPTION 'journal invariant broken: %', what USING ERRCODE = 'MS003';
    END IF;
END $$;
