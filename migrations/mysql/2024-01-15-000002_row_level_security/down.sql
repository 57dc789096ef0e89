-- MariaDB/MySQL have no row-level security: nothing to undo. This migration keeps
-- the version history the same as PostgreSQL's.
DO 0;
