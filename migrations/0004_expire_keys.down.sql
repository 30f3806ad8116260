DROP FUNCTION merch_expire_keys(text[], text[], interval);
