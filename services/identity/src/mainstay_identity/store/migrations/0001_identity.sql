-- Principals: agents, human users and services of a tenant. A client secret is
-- stored only as its argon2 hash.
CREATE TABLE principals (
    tenant        text        NOT NULL,
    name          text        NOT NULL,
    kind          text        NOT NULL CHECK (kind IN ('agent', 'user', 'service')),
    owner         text        NOT NULL DEFAULT '',
    description   text        NOT NULL DEFAULT '',
    scopes        text[]      NOT NULL DEFAULT '{}',
    secret_hash   text,
    disabled      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name)
);

-- Signing keys, private halves encrypted (Fernet). 'active' signs; 'retired'
-- is still published until retire_after (its tokens may still be alive).
CREATE TABLE signing_keys (
    kid           text        PRIMARY KEY,
    private_key   bytea       NOT NULL,
    public_jwk    jsonb       NOT NULL,
    state         text        NOT NULL CHECK (state IN ('active', 'retired')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    retire_after  timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((true)) WHERE state = 'active';

-- Every credential event: issued, exchanged, rotated, revoked, failed.
CREATE TABLE credential_events (
    id            bigserial   PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    tenant        text        NOT NULL,
    principal     text        NOT NULL,
    event         text        NOT NULL,
    jti           text        NOT NULL DEFAULT '',
    detail        text        NOT NULL DEFAULT ''
);
CREATE INDEX credential_events_tenant_at ON credential_events (tenant, at DESC);
CREATE INDEX credential_events_failed ON credential_events (tenant, principal, at)
    WHERE event = 'failed';
