-- 0003: remember which table declarations built each projection's active generation.
--
-- A fingerprint of the projection's table declarations (projections/tables.py) is stored when
-- a generation is created and when it is activated. A runner whose code declares different
-- tables refuses to write into the old ones (ProjectionOutdated) and names the rebuild to run,
-- instead of failing on a missing column halfway through a batch. '' marks generations created
-- before this migration: they are taken as current.
ALTER TABLE projections ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
