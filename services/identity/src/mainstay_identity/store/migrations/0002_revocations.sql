-- Revoked tokens (by jti) and clients (every token of the client, or acting
-- for it, issued up to revoked_at). Published to verifiers as digests only.
CREATE TABLE revocations (
    id           bigserial   PRIMARY KEY,
    tenant       text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('jti', 'client')),
    value        text        NOT NULL,
    digest       text        NOT NULL,
    reason       text        NOT NULL DEFAULT '',
    revoked_by   text        NOT NULL DEFAULT '',
    revoked_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revocations_tenant ON revocations (tenant, revoked_at DESC);
