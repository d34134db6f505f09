-- The price book: versioned prices per model and per tool, in micro-units of a
-- currency. A usage record is priced with the version in force when it
-- happened and keeps that version. tenant '' holds the prices of every
-- tenant; a tenant's own row overrides them.
CREATE TABLE prices (
    tenant           text        NOT NULL DEFAULT '',
    item             text        NOT NULL,
    version          integer     NOT NULL CHECK (version > 0),
    currency         text        NOT NULL,
    input_per_mtok   bigint      NOT NULL DEFAULT 0 CHECK (input_per_mtok >= 0),
    output_per_mtok  bigint      NOT NULL DEFAULT 0 CHECK (output_per_mtok >= 0),
    cached_per_mtok  bigint      NOT NULL DEFAULT 0 CHECK (cached_per_mtok >= 0),
    per_call         bigint      NOT NULL DEFAULT 0 CHECK (per_call >= 0),
    effective_from   timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, item, version)
);
CREATE INDEX prices_in_force ON prices (item, tenant, effective_from DESC);
