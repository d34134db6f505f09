-- Approvals and the email bridge.

-- A human's email address: where their mail is forwarded, and whom an
-- inbound email is from. One principal per address within a tenant.
ALTER TABLE principals ADD COLUMN email text NOT NULL DEFAULT '';
CREATE UNIQUE INDEX principals_email ON principals (tenant, lower(email)) WHERE email <> '';

-- What a message is: plain, an approval request, or an answer to one; the
-- request or the answer itself rides in `detail`.
ALTER TABLE messages ADD COLUMN kind text NOT NULL DEFAULT 'message'
    CHECK (kind IN ('message', 'approval-request', 'approval-reply'));
ALTER TABLE messages ADD COLUMN detail jsonb;

-- One row per approval request (its message id), decided at most once.
CREATE TABLE approvals (
    tenant       text        NOT NULL,
    approval_id  text        NOT NULL,
    thread_id    text        NOT NULL,
    requester    text        NOT NULL,
    approvers    text[]      NOT NULL,
    task_id      text        NOT NULL DEFAULT '',
    question     text        NOT NULL,
    options      text[]      NOT NULL,
    deadline     timestamptz NOT NULL,
    on_expiry    text        NOT NULL,
    status       text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'decided', 'expired')),
    decision     text,
    reason       text        NOT NULL DEFAULT '',
    decided_by   text,
    decided_at   timestamptz,
    PRIMARY KEY (tenant, approval_id),
    FOREIGN KEY (tenant, approval_id) REFERENCES messages (tenant, message_id)
);
CREATE INDEX approvals_due ON approvals (deadline) WHERE status = 'pending';

-- Email copies of deliveries. The reply token is the address a reply comes
-- back to (reply+<token>@<domain>), so it names the message and the person.
CREATE TABLE emails (
    tenant       text        NOT NULL,
    message_id   text        NOT NULL,
    recipient    text        NOT NULL,
    address      text        NOT NULL,
    reply_token  text        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    PRIMARY KEY (tenant, message_id, recipient),
    FOREIGN KEY (tenant, message_id) REFERENCES messages (tenant, message_id)
);
