-- promgres schema, version 5: which series each removal took away.
--
-- Series without samples are removed in small batches, each its own short transaction that
-- bumps promgres.series_generation and records here the ids it deleted. A writer whose
-- generation moved evicts just those ids from its cache instead of dropping the whole cache
-- (which would make every instance resolve every active series again, once per batch).
-- Records older than a day are pruned; a writer that finds a gap clears its whole cache.
CREATE TABLE promgres.series_removals (
    generation bigint      PRIMARY KEY,
    removed_at timestamptz NOT NULL DEFAULT now(),
    series_ids bigint[]    NOT NULL
);
