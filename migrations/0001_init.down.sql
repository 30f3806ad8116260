DROP TABLE journal_state;
DROP TABLE idempotency_keys;
DROP TABLE transfer_totals;
DROP TABLE transfers;
DROP TABLE purchases;
DROP TABLE inventory;
DROP TABLE users;
