-- Holds, usage, budgets and task outcomes: the service around the core.

-- One hold per task: the pending transfer that reserves its cap (agent
-- account -> the task's hold account), captured by usage and resolved once.
-- An extension voids the pending transfer and opens a larger one, so
-- pending_id is always the one in force.
CREATE TABLE holds (
    tenant             text        NOT NULL,
    task_id            text        NOT NULL,
    agent              text        NOT NULL,
    team               text        NOT NULL DEFAULT '',
    currency           text        NOT NULL,
    pending_id         text        REFERENCES transfers (id),
    account            text        NOT NULL,
    agent_account      text        NOT NULL,
    cap                bigint      NOT NULL CHECK (cap >= 0),
    spent              bigint      NOT NULL DEFAULT 0 CHECK (spent >= 0),
    overrun            bigint      NOT NULL DEFAULT 0 CHECK (overrun >= 0),
    state              text        NOT NULL
        CHECK (state IN ('open', 'exhausted', 'closing', 'closed', 'expired', 'denied')),
    reason             text        NOT NULL DEFAULT '',
    timeout_at         timestamptz NOT NULL,
    close_after        timestamptz,
    approvers          text[]      NOT NULL DEFAULT '{}',
    extension_amount   bigint      NOT NULL CHECK (extension_amount > 0),
    extensions         integer     NOT NULL DEFAULT 0,
    -- the extension asked for and not answered yet
    approval_id        text,
    approval_amount    bigint,
    approval_approvers text[],
    approval_reason    text,
    approval_deadline  timestamptz,
    approval_sent      boolean     NOT NULL DEFAULT false,
    opened_at          timestamptz NOT NULL DEFAULT now(),
    closed_at          timestamptz,
    PRIMARY KEY (tenant, task_id),
    CHECK ((state = 'denied') = (pending_id IS NULL))
);
CREATE INDEX holds_live_due ON holds (timeout_at) WHERE state IN ('open', 'exhausted', 'closing');
CREATE INDEX holds_closing ON holds (close_after) WHERE state = 'closing';
CREATE INDEX holds_unsent_approval ON holds (approval_deadline)
    WHERE approval_id IS NOT NULL AND NOT approval_sent;
CREATE INDEX holds_waiting_approval ON holds (approval_deadline) WHERE approval_id IS NOT NULL;
CREATE UNIQUE INDEX holds_approval ON holds (approval_id) WHERE approval_id IS NOT NULL;

-- Every usage record, priced, with the price-book version it was priced at.
CREATE TABLE usage (
    tenant         text        NOT NULL,
    usage_id       text        NOT NULL,
    task_id        text        NOT NULL,
    agent          text        NOT NULL DEFAULT '',
    team           text        NOT NULL DEFAULT '',
    kind           text        NOT NULL CHECK (kind IN ('model', 'tool')),
    resource       text        NOT NULL,
    step           integer     NOT NULL DEFAULT 0,
    input_tokens   bigint      NOT NULL DEFAULT 0,
    output_tokens  bigint      NOT NULL DEFAULT 0,
    cached_tokens  bigint      NOT NULL DEFAULT 0,
    calls          bigint      NOT NULL DEFAULT 0,
    currency       text        NOT NULL,
    cost           bigint      NOT NULL CHECK (cost >= 0),
    covered        bigint      NOT NULL CHECK (covered >= 0 AND covered <= cost),
    price_version  integer,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, usage_id)
);
CREATE INDEX usage_period ON usage (tenant, occurred_at);
CREATE INDEX usage_task ON usage (tenant, task_id);

-- Budgets per tenant, team or agent and period; committed spend is what was
-- spent in the period plus what open holds still reserve.
CREATE TABLE budgets (
    tenant       text        NOT NULL,
    budget_id    text        NOT NULL,
    scope        text        NOT NULL CHECK (scope IN ('tenant', 'team', 'agent')),
    name         text        NOT NULL DEFAULT '',
    period       text        NOT NULL CHECK (period IN ('day', 'month')),
    currency     text        NOT NULL,
    soft_limit   bigint      CHECK (soft_limit > 0),
    hard_limit   bigint      CHECK (hard_limit > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, budget_id),
    CHECK (soft_limit IS NOT NULL OR hard_limit IS NOT NULL),
    CHECK (soft_limit IS NULL OR hard_limit IS NULL OR soft_limit <= hard_limit),
    CHECK ((scope = 'tenant') = (name = ''))
);

-- A soft limit is announced once per budget and period.
CREATE TABLE budget_notices (
    tenant        text        NOT NULL,
    budget_id     text        NOT NULL,
    period_start  timestamptz NOT NULL,
    committed     bigint      NOT NULL,
    noticed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, budget_id, period_start)
);

-- How tasks ended (from execution.evt.task.v1), for cost per successful task.
CREATE TABLE task_outcomes (
    tenant       text        NOT NULL,
    task_id      text        NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('completed', 'failed', 'cancelled')),
    agent        text        NOT NULL DEFAULT '',
    reason       text        NOT NULL DEFAULT '',
    finished_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant, task_id)
);
CREATE INDEX task_outcomes_period ON task_outcomes (tenant, finished_at);
