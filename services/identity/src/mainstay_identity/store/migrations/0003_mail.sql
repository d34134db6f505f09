-- Mail: one row per message, one per delivery into a recipient's inbox.
CREATE TABLE messages (
    tenant       text        NOT NULL,
    message_id   text        NOT NULL,
    thread_id    text        NOT NULL,
    sender       text        NOT NULL,
    recipients   text[]      NOT NULL,
    subject      text        NOT NULL DEFAULT '',
    body         text        NOT NULL DEFAULT '',
    attachments  jsonb       NOT NULL DEFAULT '[]',
    sent_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, message_id)
);
CREATE INDEX messages_thread ON messages (tenant, thread_id, sent_at);

CREATE TABLE deliveries (
    tenant       text        NOT NULL,
    message_id   text        NOT NULL,
    recipient    text        NOT NULL,
    labels       text[]      NOT NULL DEFAULT '{}',
    delivered_at timestamptz NOT NULL DEFAULT now(),
    read_at      timestamptz,
    PRIMARY KEY (tenant, message_id, recipient),
    FOREIGN KEY (tenant, message_id) REFERENCES messages (tenant, message_id)
);
CREATE INDEX deliveries_inbox ON deliveries (tenant, recipient, delivered_at DESC);
