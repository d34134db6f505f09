"""Mainstay identity: agent identities, short-lived credentials, inboxes and approvals."""
