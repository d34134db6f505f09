-- The agents the execution service knows: every version seen on supervisor.evt.agent.v1.
CREATE TABLE agent_versions (
    tenant      text    NOT NULL,
    name        text    NOT NULL,
    version     integer NOT NULL CHECK (version >= 1),
    definition  jsonb   NOT NULL,
    PRIMARY KEY (tenant, name, version)
);

CREATE TABLE agents (
    tenant             text    NOT NULL,
    name               text    NOT NULL,
    latest_version     integer NOT NULL,
    quarantined        boolean NOT NULL DEFAULT false,
    quarantine_reason  text    NOT NULL DEFAULT '',
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name)
);

-- Which instance owns which partition of the task topic, fenced by epoch.
CREATE TABLE leases (
    partition   integer     PRIMARY KEY,
    owner       text        NOT NULL,
    epoch       bigint      NOT NULL,
    renewed_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per task: its definition snapshot, where it is, and how it ended.
CREATE TABLE tasks (
    task_id         text        PRIMARY KEY,
    tenant          text        NOT NULL,
    agent           text        NOT NULL,
    agent_version   integer,
    partition       integer     NOT NULL,
    definition      jsonb,
    input           text        NOT NULL,
    token           text        NOT NULL,
    principal       text        NOT NULL DEFAULT '',
    cap_micros      bigint,
    deadline        timestamptz,
    priority        integer     NOT NULL DEFAULT 5,
    labels          jsonb       NOT NULL DEFAULT '{}',
    state           text        NOT NULL
                    CHECK (state IN ('running', 'waiting', 'completed', 'failed', 'cancelled')),
    model_index     integer     NOT NULL DEFAULT 0,
    corrections     integer     NOT NULL DEFAULT 0,
    degraded        boolean     NOT NULL DEFAULT false,
    wake_at         timestamptz,
    waiting_for     text        NOT NULL DEFAULT '',
    answer          text,
    reason          text        NOT NULL DEFAULT '',
    cost_micros     bigint      NOT NULL DEFAULT 0,
    steps           integer     NOT NULL DEFAULT 0,
    epoch           bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX tasks_live ON tasks (partition) WHERE state IN ('running', 'waiting');
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;

-- Checkpoints: every model reply and every tool call, recorded before the next action.
CREATE TABLE model_calls (
    task_id      text        NOT NULL REFERENCES tasks ON DELETE CASCADE,
    step         integer     NOT NULL,
    attempt      integer     NOT NULL,
    provider     text        NOT NULL,
    model        text        NOT NULL,
    reply        jsonb,
    error        text        NOT NULL DEFAULT '',
    error_kind   text        NOT NULL DEFAULT '',
    usage_id     text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, step, attempt)
);

CREATE TABLE tool_calls (
    task_id          text        NOT NULL REFERENCES tasks ON DELETE CASCADE,
    step             integer     NOT NULL,
    idx              integer     NOT NULL,
    call_id          text        NOT NULL,
    tool             text        NOT NULL,
    arguments        jsonb       NOT NULL,
    idempotency_key  text        NOT NULL UNIQUE,
    result           jsonb,
    sent_at          timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    PRIMARY KEY (task_id, step, idx)
);
