-- Dead letters an operator acted on. The letters themselves stay on the broker
-- (a DLQ topic keeps them for its retention, 30 days), so purging is logical:
-- a purged letter is hidden, not deleted. The key makes a second replay or
-- purge of one letter impossible, even when two operators race.
CREATE TABLE dead_letters (
    topic      text        NOT NULL,
    partition  integer     NOT NULL CHECK (partition >= 0),
    "offset"   bigint      NOT NULL CHECK ("offset" >= 0),
    ce_id      text        NOT NULL DEFAULT '',
    status     text        NOT NULL CHECK (status IN ('replayed', 'purged')),
    new_ce_id  text        CHECK ((status = 'replayed') = (new_ce_id IS NOT NULL)),
    reason     text        NOT NULL DEFAULT '',
    actor      text        NOT NULL,
    tenant     text        NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
CREATE INDEX dead_letters_status ON dead_letters (topic, status, partition, "offset");

-- Every triage action, read or write, and what came of it.
CREATE TABLE dead_letter_audit (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text        NOT NULL,
    tenant     text        NOT NULL,
    action     text        NOT NULL CHECK (action IN ('list', 'inspect', 'replay', 'purge')),
    topic      text,
    partition  integer,
    "offset"   bigint,
    outcome    text        NOT NULL,
    details    jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX dead_letter_audit_letter ON dead_letter_audit (topic, partition, "offset", id);
