-- Users: the source of truth for balances. CHECK is the last guard against
-- a negative balance; the actors never journal a change that would cause one.
CREATE TABLE users (
    name          text        PRIMARY KEY,
    password_hash bytea       NOT NULL,
    balance       bigint      NOT NULL CHECK (balance >= 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE inventory (
    user_name text   NOT NULL REFERENCES users (name),
    item      text   NOT NULL,
    quantity  bigint NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (user_name, item)
);

-- Append-only ledgers, written in the same transaction as the balances.
CREATE TABLE purchases (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch     bigint      NOT NULL,
    user_name text        NOT NULL,
    item      text        NOT NULL,
    price     bigint      NOT NULL CHECK (price > 0),
    at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE transfers (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch     bigint      NOT NULL,
    from_user text        NOT NULL,
    to_user   text        NOT NULL,
    amount    bigint      NOT NULL CHECK (amount > 0),
    at        timestamptz NOT NULL DEFAULT now(),
    CHECK (from_user <> to_user)
);

-- Per-pair totals, so loading a user's grouped history is one index scan.
CREATE TABLE transfer_totals (
    from_user text   NOT NULL REFERENCES users (name),
    to_user   text   NOT NULL REFERENCES users (name),
    amount    bigint NOT NULL CHECK (amount > 0),
    PRIMARY KEY (from_user, to_user)
);
CREATE INDEX transfer_totals_to_user ON transfer_totals (to_user);

-- Idempotency keys of applied changes, stored with the change.
CREATE TABLE idempotency_keys (
    user_name  text        NOT NULL,
    key        text        NOT NULL,
    kind       text        NOT NULL,
    item       text        NOT NULL DEFAULT '',
    peer       text        NOT NULL DEFAULT '',
    amount     bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_name, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- The journal writer's marker: the id of the last committed batch. A batch
-- whose outcome was lost with its connection is looked up here before it is
-- retried, so no batch is ever applied twice.
CREATE TABLE journal_state (
    id         int    PRIMARY KEY CHECK (id = 1),
    last_batch bigint NOT NULL
);
INSERT INTO journal_state (id, last_batch) VALUES (1, 0);
