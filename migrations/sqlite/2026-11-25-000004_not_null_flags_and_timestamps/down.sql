-- On SQLite the flags and timestamps are NOT NULL since the first migration.
-- This migration keeps the version history the same as PostgreSQL's.
SELECT 1;
