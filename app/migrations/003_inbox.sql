-- The inbox API's full-text search (app/inbox.py): title and body with the
-- 'simple' configuration (no stemming, so it works for any language). The
-- query must use this exact expression for the index to be chosen.
CREATE INDEX notifications_search ON notifications
    USING gin (to_tsvector('simple', coalesce(title, '') || ' ' || coalesce(body, '')));
