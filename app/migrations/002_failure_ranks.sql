-- A failure reported after sending (a bounce, an undelivered SMS) must move a
-- SENT row on, and a retried attempt is QUEUED again rather than FAILED.
-- Same order as rules/statuses.py.
CREATE OR REPLACE FUNCTION herald_status_rank(status text) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE status
        WHEN 'CREATED' THEN 0 WHEN 'SCHEDULED' THEN 1 WHEN 'QUEUED' THEN 2
        WHEN 'SUPPRESSED' THEN 4 WHEN 'SENT' THEN 4
        WHEN 'FAILED' THEN 5 WHEN 'DEAD' THEN 5
        WHEN 'DELIVERED' THEN 6 WHEN 'READ' THEN 7
        ELSE -1 END
$$;
