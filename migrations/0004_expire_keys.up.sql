-- merch_expire_keys deletes the expired rows (older than retention) of the
-- given (user, key) pairs, so a key reused after its retention is stored
-- afresh; a live row stays and its primary key refuses a second change.
-- One primary-key lookup per key: a DELETE joining the table to unnest()
-- is planned from the table's statistics, and a plan cached while the
-- table was nearly empty (a fresh database) seq-scans every stored key in
-- every batch.
CREATE FUNCTION merch_expire_keys(users text[], keys text[], retention interval) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1 .. coalesce(array_length(users, 1), 0) LOOP
        DELETE FROM idempotency_keys
        WHERE user_name = users[i] AND key = keys[i] AND created_at <= now() - retention;
    END LOOP;
END
$$;
