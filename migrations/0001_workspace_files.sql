-- Bifrost's workspace_files table, created only where it is missing (Bifrost's own migrations
-- usually create it first; we never alter a table that exists), plus the NOTIFY trigger the
-- operator LISTENs to. Idempotent: safe to run on every start.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'gitstatus') THEN
        CREATE TYPE gitstatus AS ENUM ('untracked', 'synced', 'modified', 'deleted');
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS workspace_files (
    id                   uuid PRIMARY KEY,
    path                 varchar(1000) NOT NULL UNIQUE,
    entity_type          varchar NOT NULL,
    content              text,
    content_hash         varchar,
    size_bytes           integer,
    content_type         varchar(100) DEFAULT 'text/plain',
    git_status           gitstatus NOT NULL DEFAULT 'untracked',
    last_git_commit_hash varchar(40),
    is_deleted           boolean NOT NULL DEFAULT false,
    created_at           timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc'),
    updated_at           timestamp NOT NULL DEFAULT (now() AT TIME ZONE 'utc')
);

CREATE OR REPLACE FUNCTION bifrost_requirements_notify() RETURNS trigger AS $$
DECLARE
    r record;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    IF r.entity_type = 'requirements'
       OR (TG_OP = 'UPDATE' AND OLD.entity_type = 'requirements') THEN
        PERFORM pg_notify('bifrost_requirements_changed',
            json_build_object('op', TG_OP, 'path', r.path, 'entity_type', r.entity_type,
                              'content_hash', r.content_hash, 'is_deleted', r.is_deleted)::text);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgname = 'bifrost_requirements_notify'
                     AND tgrelid = 'workspace_files'::regclass) THEN
        CREATE TRIGGER bifrost_requirements_notify
            AFTER INSERT OR UPDATE OR DELETE ON workspace_files
            FOR EACH ROW EXECUTE FUNCTION bifrost_requirements_notify();
    END IF;
END
$$;
