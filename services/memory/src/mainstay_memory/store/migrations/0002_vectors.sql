-- Memory vectors for the pgvector backend (store/vectors_pgvector.py).
--
-- Independent of the records table on purpose (no foreign key): the vector is
-- written before its record commits, and the index may live in Weaviate
-- instead, so the two are joined by record id only.
--
-- The embedding column is created without a dimension because the dimension
-- comes from the configured embedder (384 for all-MiniLM-L6-v2, any other for
-- an OpenAI-compatible endpoint). HNSW cannot index an undimensioned column,
-- so PgVectorIndex.start() pins it to vector(N) and builds the HNSW index
-- (with m / ef_construction from MEMORY_VECTORS_HNSW_*) on first start, and
-- refuses to start when the column already holds another dimension.

-- A no-op where the extension exists (the embedded PostgreSQL installs it);
-- named schema so it never lands in the service schema of the search_path.
CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public;

CREATE TABLE record_vectors (
    record_id   uuid        PRIMARY KEY,
    tenant      text        NOT NULL,
    agent_id    text        NOT NULL DEFAULT '',
    user_id     text        NOT NULL DEFAULT '',
    session_id  text        NOT NULL DEFAULT '',
    kind        text        NOT NULL,
    valid_from  timestamptz NOT NULL,
    valid_to    timestamptz,
    embedding   vector      NOT NULL
);

-- Scope filters: a small scope (one agent's memories among many) is cheaper to
-- read through these and sort exactly than to walk the HNSW graph; the
-- planner picks whichever its statistics favour.
CREATE INDEX record_vectors_scope ON record_vectors (tenant, agent_id, user_id, session_id);
CREATE INDEX record_vectors_kind ON record_vectors (tenant, kind);
