-- promgres schema, version 4: tenures of the legacy advisory-lock election.
--
-- A backend pid names a lock holder only while its session lives; PostgreSQL reuses pids. Each
-- time a promgres wins the advisory lock it bumps the lock's tenure here (while holding the
-- key and its companion lock exclusively), and every insert transaction checks, under the
-- companion lock, that its job's tenure is still the current one and that the session named
-- here (pid and backend start) still holds the key. A job accepted under an earlier tenure, or
-- by a session that is gone, is never stored.
CREATE TABLE promgres.advisory_tenure (
    lock_id      bigint      PRIMARY KEY,
    tenure       bigint      NOT NULL,
    holder_pid   integer     NOT NULL,
    holder_start timestamptz NOT NULL,
    since        timestamptz NOT NULL DEFAULT now()
);
