-- SQLite has no row-level security. This migration keeps the version history the
-- same as PostgreSQL's; the crate scopes every query by account and user itself.
SELECT 1;
