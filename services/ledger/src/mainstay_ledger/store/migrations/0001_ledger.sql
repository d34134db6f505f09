-- The double-entry core, modelled on TigerBeetle: accounts with running
-- balances and limit flags, and immutable transfers.

CREATE TABLE accounts (
    id               text        PRIMARY KEY,
    tenant           text        NOT NULL,
    kind             text        NOT NULL,
    currency         text        NOT NULL,
    -- 'debits_must_not_exceed_credits' / 'credits_must_not_exceed_debits'
    flags            text[]      NOT NULL DEFAULT '{}',
    debits_pending   bigint      NOT NULL DEFAULT 0 CHECK (debits_pending >= 0),
    debits_posted    bigint      NOT NULL DEFAULT 0 CHECK (debits_posted >= 0),
    credits_pending  bigint      NOT NULL DEFAULT 0 CHECK (credits_pending >= 0),
    credits_posted   bigint      NOT NULL DEFAULT 0 CHECK (credits_posted >= 0),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_tenant ON accounts (tenant, kind);

-- kind: 'posted' moves money now; 'pending' reserves it (a hold) until it is
-- captured in parts ('capture', each posting part of it), and resolved once:
-- 'void' releases the rest, 'expire' does the same at the timeout.
CREATE TABLE transfers (
    id               text        PRIMARY KEY,
    tenant           text        NOT NULL,
    debit_account    text        NOT NULL REFERENCES accounts (id),
    credit_account   text        NOT NULL REFERENCES accounts (id),
    amount           bigint      NOT NULL CHECK (amount >= 0),
    currency         text        NOT NULL,
    code             text        NOT NULL,
    kind             text        NOT NULL
        CHECK (kind IN ('posted', 'pending', 'capture', 'void', 'expire')),
    pending_id       text        REFERENCES transfers (id),
    remaining        bigint      CHECK (remaining >= 0),
    state            text        CHECK (state IN ('open', 'voided', 'expired')),
    timeout_at       timestamptz,
    task_id          text        NOT NULL DEFAULT '',
    step             integer,
    detail           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (debit_account <> credit_account),
    CHECK (amount > 0 OR kind IN ('void', 'expire')),
    CHECK ((kind = 'pending') = (state IS NOT NULL)),
    CHECK ((kind = 'pending') = (remaining IS NOT NULL)),
    CHECK ((kind IN ('capture', 'void', 'expire')) = (pending_id IS NOT NULL))
);
-- A pending transfer is resolved (voided or expired) at most once.
CREATE UNIQUE INDEX transfers_one_resolution ON transfers (pending_id)
    WHERE kind IN ('void', 'expire');
CREATE INDEX transfers_pending_due ON transfers (timeout_at)
    WHERE kind = 'pending' AND state = 'open';
CREATE INDEX transfers_task ON transfers (tenant, task_id) WHERE task_id <> '';
CREATE INDEX transfers_debit ON transfers (debit_account, created_at);
CREATE INDEX transfers_credit ON transfers (credit_account, created_at);
