-- Run once by the postgres image on a fresh data volume: the memory service's
-- migrations need pgvector, as the embedded PostgreSQL of `./dev up` provides.
CREATE EXTENSION IF NOT EXISTS vector;
