-- Quarantine bookkeeping. Restarts up to restarts_counted_after (a restarts.id,
-- set when the agent is released) do not count against the agent again.
ALTER TABLE agents ADD COLUMN quarantined_at timestamptz;
ALTER TABLE agents ADD COLUMN released_at timestamptz;
ALTER TABLE agents ADD COLUMN restarts_counted_after bigint NOT NULL DEFAULT 0;

-- Every task the supervisor has seen on execution.evt.task.v1, and its last progress.
CREATE TABLE tasks (
    task_id           text        PRIMARY KEY,
    tenant            text        NOT NULL,
    agent             text        NOT NULL DEFAULT '',
    agent_version     integer,
    state             text        NOT NULL
                      CHECK (state IN ('running', 'waiting', 'cancelling', 'finished')),
    last_event        text        NOT NULL,
    -- The supervisor's clock when it consumed the last progress event: a backlog
    -- consumed late never makes a task look stuck.
    last_progress_at  timestamptz NOT NULL,
    step_timeout_s    double precision NOT NULL CHECK (step_timeout_s > 0),
    restarts          integer     NOT NULL DEFAULT 0,
    last_restart_at   timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_running ON tasks (last_progress_at) WHERE state = 'running';
CREATE INDEX tasks_finished ON tasks (updated_at) WHERE state = 'finished';

-- Every restart of a stuck task: the agent's restart intensity counts them.
CREATE TABLE restarts (
    id            bigserial   PRIMARY KEY,
    tenant        text        NOT NULL,
    agent         text        NOT NULL,
    task_id       text        NOT NULL,
    restarted_at  timestamptz NOT NULL
);
CREATE INDEX restarts_by_agent ON restarts (tenant, agent, restarted_at);

-- What the supervisor told humans (also when it had no way to mail them).
CREATE TABLE notices (
    id          bigserial   PRIMARY KEY,
    tenant      text        NOT NULL,
    agent       text        NOT NULL,
    task_id     text        NOT NULL DEFAULT '',
    kind        text        NOT NULL CHECK (kind IN ('task.cancelled', 'agent.quarantined')),
    recipients  text[]      NOT NULL,
    subject     text        NOT NULL,
    body        text        NOT NULL,
    mailed      boolean     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notices_by_tenant ON notices (tenant, created_at);
