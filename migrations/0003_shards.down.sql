DROP FUNCTION journal_begin(text, bigint, bigint, bigint);
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
ALTER TABLE journal_writers DROP COLUMN owner_version;
DROP TABLE pending_credits;
DROP TABLE nodes;
DROP TABLE shard_owner;
ALTER TABLE transfers DROP COLUMN epoch, DROP COLUMN shard;
ALTER TABLE purchases DROP COLUMN epoch, DROP COLUMN shard;
ALTER TABLE transfer_totals DROP COLUMN shard;
ALTER TABLE idempotency_keys DROP COLUMN shard;
ALTER TABLE inventory DROP COLUMN shard;
ALTER TABLE users DROP COLUMN folds, DROP COLUMN shard;
DROP FUNCTION merch_shard(text);
