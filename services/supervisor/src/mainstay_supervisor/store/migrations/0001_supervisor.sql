-- The agent registry: every version of every agent's definition, and its state.
CREATE TABLE agents (
    tenant             text        NOT NULL,
    name               text        NOT NULL,
    latest_version     integer     NOT NULL CHECK (latest_version >= 1),
    quarantined        boolean     NOT NULL DEFAULT false,
    quarantine_reason  text        NOT NULL DEFAULT '',
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name)
);

CREATE TABLE agent_versions (
    tenant         text        NOT NULL,
    name           text        NOT NULL,
    version        integer     NOT NULL CHECK (version >= 1),
    definition     jsonb       NOT NULL,
    registered_by  text        NOT NULL,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, name, version),
    FOREIGN KEY (tenant, name) REFERENCES agents (tenant, name)
);

-- The fleet: the last heartbeat of every service instance.
CREATE TABLE instances (
    service           text        NOT NULL,
    instance          text        NOT NULL,
    version           text        NOT NULL DEFAULT '',
    in_flight         integer     NOT NULL DEFAULT 0,
    last_progress_at  timestamptz,
    last_heartbeat    timestamptz NOT NULL,
    first_seen        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (service, instance)
);
