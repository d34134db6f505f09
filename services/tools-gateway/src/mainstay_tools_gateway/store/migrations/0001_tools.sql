-- The registry: one row per tool, its latest definition.
CREATE TABLE tools (
    name        text        PRIMARY KEY,
    version     text        NOT NULL,
    spec        jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text        NOT NULL DEFAULT ''
);

-- Credentials, encrypted (Fernet). tenant/agent '' means "any": a credential
-- for (tool, tenant, agent) wins over (tool, tenant, '') over (tool, '', '').
CREATE TABLE credentials (
    tool        text        NOT NULL,
    tenant      text        NOT NULL DEFAULT '',
    agent       text        NOT NULL DEFAULT '',
    name        text        NOT NULL,
    ciphertext  bytea       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tool, name, tenant, agent)
);

-- Token buckets shared by every gateway instance.
CREATE TABLE rate_buckets (
    key         text             PRIMARY KEY,
    tokens      double precision NOT NULL,
    updated_at  timestamptz      NOT NULL
);

-- Take one token from every bucket in `keys`, or from none. Returns 0 when
-- taken, else the seconds until all of them hold a token again. Rows are
-- locked in key order (callers pass sorted keys), so concurrent callers never
-- deadlock; the database clock is the one clock all instances share.
CREATE FUNCTION take_tokens(keys text[], rates double precision[], bursts double precision[])
RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    now_ts timestamptz := clock_timestamp();
    available double precision[];
    current double precision;
    wait double precision := 0;
BEGIN
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        INSERT INTO rate_buckets (key, tokens, updated_at)
        VALUES (keys[i], bursts[i], now_ts)
        ON CONFLICT (key) DO NOTHING;
    END LOOP;
    PERFORM 1 FROM rate_buckets WHERE key = ANY (keys) ORDER BY key FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        SELECT least(bursts[i], b.tokens
                     + greatest(0, extract(epoch FROM now_ts - b.updated_at)) * rates[i])
          INTO current
          FROM rate_buckets b WHERE b.key = keys[i];
        available[i] := current;
        IF current < 1 THEN
            wait := greatest(wait, (1 - current) / rates[i]);
        END IF;
    END LOOP;
    IF wait > 0 THEN
        RETURN wait;
    END IF;
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        UPDATE rate_buckets SET tokens = available[i] - 1, updated_at = now_ts
         WHERE key = keys[i];
    END LOOP;
    RETURN 0;
END
$$;

-- Idempotency: the first final result per (tenant, key), replayed for repeats.
-- A 'running' row is a call in flight; its lease lets another delivery take
-- over after a crash.
CREATE TABLE calls (
    tenant          text        NOT NULL,
    idempotency_key text        NOT NULL,
    call_id         uuid        NOT NULL,
    tool            text        NOT NULL,
    args_digest     text        NOT NULL,
    state           text        NOT NULL CHECK (state IN ('running', 'done')),
    lease_until     timestamptz NOT NULL,
    result          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, idempotency_key)
);

-- Every call, answered or refused.
CREATE TABLE audit (
    id              bigserial   PRIMARY KEY,
    call_id         uuid        NOT NULL,
    at              timestamptz NOT NULL,
    tenant          text        NOT NULL,
    principal       text        NOT NULL,
    acting_for      text[]      NOT NULL DEFAULT '{}',
    tool            text        NOT NULL,
    tool_version    text        NOT NULL DEFAULT '',
    args_digest     text        NOT NULL,
    outcome         text        NOT NULL,
    message         text        NOT NULL DEFAULT '',
    latency_ms      double precision NOT NULL,
    attempt         integer     NOT NULL,
    cost_micros     bigint      NOT NULL DEFAULT 0,
    idempotency_key text        NOT NULL DEFAULT '',
    task_id         text        NOT NULL DEFAULT '',
    step            integer     NOT NULL DEFAULT 0,
    replayed        boolean     NOT NULL DEFAULT false,
    channel         text        NOT NULL
);
CREATE INDEX audit_tenant_at ON audit (tenant, at DESC, id DESC);
CREATE INDEX audit_tenant_tool_at ON audit (tenant, tool, at DESC);
CREATE INDEX audit_tenant_task ON audit (tenant, task_id) WHERE task_id <> '';
