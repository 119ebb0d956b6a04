-- promgres schema, version 3: removal of series that have no samples left.
--
-- Every running instance caches series ids. A cleanup that deletes series bumps this
-- generation; writers read it inside their insert transaction (holding a shared advisory lock
-- the cleanup takes exclusively), and when it moved they drop their cache and resolve ids
-- again, so no sample is ever written for a deleted series id.
CREATE TABLE promgres.series_generation (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    generation bigint  NOT NULL
);
INSERT INTO promgres.series_generation VALUES (true, 0);
