-- What a task waits for from the rest of the mesh, as the events of the ledger,
-- the tools gateway and the identity service report it (consumers record these
-- facts; only the task's owner acts on them).
ALTER TABLE tasks
    ADD COLUMN started_at    timestamptz,
    -- none (no hold), requested, open, exhausted, denied, extension-denied, expired, closed
    ADD COLUMN hold_state    text  NOT NULL DEFAULT 'none',
    ADD COLUMN hold_reason   text  NOT NULL DEFAULT '',
    -- The memories recalled before the first step (NULL: not recalled yet).
    ADD COLUMN recalled      jsonb,
    -- A pending escalation: {approval_id, step, reason} and, once a human answered,
    -- {decision, decided_by, note}.
    ADD COLUMN escalation    jsonb,
    -- How the task ends once its usage is confirmed: {state, reason, answer}.
    ADD COLUMN ending        jsonb,
    ADD COLUMN ending_at     timestamptz,
    -- After retention: what is left of a finished task.
    ADD COLUMN summary       jsonb,
    ADD COLUMN compacted_at  timestamptz;

ALTER TABLE tool_calls
    ADD COLUMN attempts      integer NOT NULL DEFAULT 1,
    -- The highest attempt answered with a retryable failure, and when to try again.
    ADD COLUMN failed_attempt integer NOT NULL DEFAULT 0,
    ADD COLUMN outcome       text    NOT NULL DEFAULT '',
    ADD COLUMN retry_at      timestamptz,
    ADD COLUMN cost_micros   bigint  NOT NULL DEFAULT 0;

-- The usage the ledger confirmed, one row per usage id.
CREATE TABLE charges (
    usage_id     text        PRIMARY KEY,
    task_id      text        NOT NULL REFERENCES tasks ON DELETE CASCADE,
    cost_micros  bigint      NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX charges_task ON charges (task_id);

CREATE INDEX tasks_compactable ON tasks (finished_at)
    WHERE finished_at IS NOT NULL AND compacted_at IS NULL;

-- The tools the gateway has registered (from tools.evt.tool.v1): what a model is
-- told about each tool an agent may call, and the schema its arguments must meet.
CREATE TABLE tools (
    name        text        PRIMARY KEY,
    spec        jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
