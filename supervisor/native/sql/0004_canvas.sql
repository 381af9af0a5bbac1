-- start-all native queue, schema version 4: canvas (chords, saved group results).
-- A chord's counter: each header task decrements `remaining` in the transaction that records
-- its finish; the one that takes it to zero starts the body in that same transaction.
CREATE TABLE IF NOT EXISTS start_all.chords (
    id          text        PRIMARY KEY,           -- the header group's id
    remaining   integer     NOT NULL,              -- header tasks still to finish
    header_ids  jsonb       NOT NULL,              -- where each header result lands, in order
    body        jsonb       NOT NULL,              -- the body's signature, ids already fixed
    after       jsonb       NOT NULL DEFAULT '[]', -- chain steps after the body
    outer_chord text,                              -- the chord the body's result counts for
    root_id     text,
    error       jsonb,                             -- the first header failure
    created_at  timestamptz NOT NULL DEFAULT now(),
    fired_at    timestamptz
);
CREATE INDEX IF NOT EXISTS chords_fired ON start_all.chords (fired_at) WHERE fired_at IS NOT NULL;

-- GroupResult.save() / GroupResult.restore(id)
CREATE TABLE IF NOT EXISTS start_all.groups (
    id         text        PRIMARY KEY,
    results    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
