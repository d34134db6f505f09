"""pytest plugin: fixtures that start or attach to the embedded broker and PostgreSQL."""
