-- Users spread over 256 fixed shards owned by nodes (README, "More than one
-- node"). Every per-user table carries its shard, ready for a distributed
-- PostgreSQL later; the journal writes it (computed in Go: actors.ShardOf).

-- merch_shard is actors.ShardOf in SQL: crc32 (IEEE, reflected 0xEDB88320)
-- of the name's UTF-8 bytes mod 256. Used to backfill, and by tests to pin
-- that both agree; the hot path never calls it.
CREATE FUNCTION merch_shard(name text) RETURNS smallint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    crc   bigint := 4294967295;
    bytes bytea  := convert_to(name, 'UTF8');
BEGIN
    FOR i IN 0 .. length(bytes) - 1 LOOP
        crc := crc # get_byte(bytes, i);
        FOR k IN 1 .. 8 LOOP
            IF (crc & 1) = 1 THEN
                crc := (crc >> 1) # 3988292384;
            ELSE
                crc := crc >> 1;
            END IF;
        END LOOP;
    END LOOP;
    RETURN ((crc # 4294967295) % 256)::smallint;
END $$;

ALTER TABLE users ADD COLUMN shard smallint;
UPDATE users SET shard = merch_shard(name);
ALTER TABLE users ALTER COLUMN shard SET NOT NULL;
-- folds counts the pending-credit folds applied to the user, so an actor
-- loaded while a fold commits applies that fold exactly once.
ALTER TABLE users ADD COLUMN folds bigint NOT NULL DEFAULT 0;

ALTER TABLE inventory ADD COLUMN shard smallint;
UPDATE inventory SET shard = merch_shard(user_name);
ALTER TABLE inventory ALTER COLUMN shard SET NOT NULL;

ALTER TABLE idempotency_keys ADD COLUMN shard smallint;
UPDATE idempotency_keys SET shard = merch_shard(user_name);
ALTER TABLE idempotency_keys ALTER COLUMN shard SET NOT NULL;

ALTER TABLE transfer_totals ADD COLUMN shard smallint;
UPDATE transfer_totals SET shard = merch_shard(from_user);
ALTER TABLE transfer_totals ALTER COLUMN shard SET NOT NULL;

-- Ledger rows also record the writer's epoch for the shard: per shard it
-- never decreases in commit (id) order, which the cluster tests audit.
ALTER TABLE purchases ADD COLUMN shard smallint;
UPDATE purchases SET shard = merch_shard(user_name);
ALTER TABLE purchases ALTER COLUMN shard SET NOT NULL;
ALTER TABLE purchases ADD COLUMN epoch bigint NOT NULL DEFAULT 0;

ALTER TABLE transfers ADD COLUMN shard smallint;
UPDATE transfers SET shard = merch_shard(from_user);
ALTER TABLE transfers ALTER COLUMN shard SET NOT NULL;
ALTER TABLE transfers ADD COLUMN epoch bigint NOT NULL DEFAULT 0;

-- Shard leases. A node answers for a shard only under its lease; every
-- acquisition increments epoch (see persist/lease.go).
CREATE TABLE shard_owner (
    shard       smallint    PRIMARY KEY CHECK (shard BETWEEN 0 AND 255),
    node_id     text        NOT NULL DEFAULT '',
    incarnation bigint      NOT NULL DEFAULT 0,
    epoch       bigint      NOT NULL DEFAULT 0,
    expires_at  timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO shard_owner (shard) SELECT g FROM generate_series(0, 255) g;

-- Live nodes, for placement (rendezvous hashing) and routing.
CREATE TABLE nodes (
    node_id       text        PRIMARY KEY,
    incarnation   bigint      NOT NULL,
    internal_addr text        NOT NULL,
    heartbeat_at  timestamptz NOT NULL
);

-- A transfer between users of different owners: the sender's batch debits
-- the sender and inserts the credit here; the receiver's owner folds it
-- (DELETE … RETURNING) exactly once. Σ balances + Σ amount here +
-- Σ inventory value = 1000 × users at every commit.
CREATE TABLE pending_credits (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_shard smallint    NOT NULL,
    to_shard   smallint    NOT NULL,
    from_user  text        NOT NULL REFERENCES users (name),
    to_user    text        NOT NULL REFERENCES users (name),
    amount     bigint      NOT NULL CHECK (amount > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_credits_to ON pending_credits (to_shard, id);
CREATE INDEX pending_credits_to_user ON pending_credits (to_user);

-- The fence. A node's ownership of its shards has a version on its writer
-- row; taking a shard from a node increments that node's version while
-- holding its writer row lock (which every batch of it holds), so the
-- takeover commits after the node's batch in flight, and every later batch
-- of the node fails journal_begin with MS005 ("not owner") until the node
-- has re-read what it still owns.
ALTER TABLE journal_writers ADD COLUMN owner_version bigint NOT NULL DEFAULT 0;

DROP FUNCTION journal_begin(text, bigint, bigint);
CREATE FUNCTION journal_begin(w text, inc bigint, b bigint, ver bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    cur_inc  bigint;
    cur_last bigint;
    cur_ver  bigint;
BEGIN
    SELECT incarnation, last_batch, owner_version INTO cur_inc, cur_last, cur_ver
      FROM journal_writers WHERE writer = w FOR UPDATE;
    IF NOT FOUND OR cur_inc <> inc THEN
        RAISE EXCEPTION 'journal writer % incarnation % is superseded by %', w, inc, cur_inc
            USING ERRCODE = 'MS001';
    END IF;
    -- "Already committed" first: a batch that committed before ownership
    -- changed must be reported committed, not refused.
    IF cur_last = b THEN
        RAISE EXCEPTION 'journal batch % of writer % is already committed', b, w
            USING ERRCODE = 'MS002';
    END IF;
    IF cur_last > b THEN
        RAISE EXCEPTION 'journal marker % of writer % is past batch %', cur_last, w, b
            USING ERRCODE = 'MS004';
    END IF;
    IF cur_ver <> ver THEN
        RAISE EXCEPTION 'journal writer % does not own what it thinks (ownership version % is now %)', w, ver, cur_ver
            USING ERRCODE = 'MS005';
    END IF;
    UPDATE journal_writers SET last_batch = b WHERE writer = w;
END $$;
