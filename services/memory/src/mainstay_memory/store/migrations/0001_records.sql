-- Memory records: every version of every memory, with its validity interval.
CREATE TABLE records (
    id              uuid        PRIMARY KEY,
    tenant          text        NOT NULL,
    agent_id        text        NOT NULL DEFAULT '',
    user_id         text        NOT NULL DEFAULT '',
    session_id      text        NOT NULL DEFAULT '',
    kind            text        NOT NULL,
    content         text        NOT NULL,
    subject         text        NOT NULL DEFAULT '',
    metadata        jsonb       NOT NULL DEFAULT '{}',
    importance      real        NOT NULL,
    source_task_id  text        NOT NULL DEFAULT '',
    source_step     integer     NOT NULL DEFAULT 0,
    idempotency_key text        NOT NULL DEFAULT '',
    valid_from      timestamptz NOT NULL,
    valid_to        timestamptz,
    superseded_by   uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    merged_count    integer     NOT NULL DEFAULT 0,
    forgotten       boolean     NOT NULL DEFAULT false,
    search          tsvector    GENERATED ALWAYS AS (
        to_tsvector('english', subject || ' ' || content)
    ) STORED
);

-- At most one current record per scope and subject: curation relies on it.
CREATE UNIQUE INDEX records_current_subject
    ON records (tenant, agent_id, user_id, session_id, subject)
    WHERE subject <> '' AND valid_to IS NULL AND NOT forgotten;
CREATE INDEX records_scope ON records (tenant, agent_id, user_id, session_id, valid_from);
CREATE INDEX records_subject_history ON records (tenant, agent_id, user_id, session_id, subject, valid_from)
    WHERE subject <> '';
CREATE INDEX records_search ON records USING gin (search);
CREATE INDEX records_expiry ON records (expires_at)
    WHERE expires_at IS NOT NULL AND valid_to IS NULL AND NOT forgotten;

-- The first answer to each idempotency key, replayed for repeats.
CREATE TABLE remember_results (
    tenant          text        NOT NULL,
    idempotency_key text        NOT NULL,
    record_id       uuid        NOT NULL,
    outcome         text        NOT NULL,
    superseded_ids  uuid[]      NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, idempotency_key)
);
