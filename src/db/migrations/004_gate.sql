-- The gate: tags that wait for admission, and one admission per (repository, subject digest).

-- A tag a push asked for while its manifest is in quarantine. Only principals with push
-- rights resolve these; the commit moves them to `tags`. The newest push of a tag wins.
CREATE TABLE pending_tags (
  repository_id   bigint NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
  name            text COLLATE "C" NOT NULL,
  manifest_digest text NOT NULL,
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (repository_id, name),
  FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX pending_tags_manifest ON pending_tags (repository_id, manifest_digest);

CREATE TABLE admissions (
  id              bigserial PRIMARY KEY,
  repository_id   bigint NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
  digest          text NOT NULL,
  media_type      text NOT NULL,
  state           text NOT NULL CHECK (state IN ('pending', 'admitted', 'denied', 'expired')),
  -- Every tag pushes asked for, in order of arrival.
  tags            text[] NOT NULL DEFAULT '{}',
  policy_name     text,
  policy_hash     text,
  policy_mode     text,
  results         jsonb NOT NULL DEFAULT '[]',
  reasons         jsonb NOT NULL DEFAULT '[]',
  waiting_for     jsonb NOT NULL DEFAULT '[]',
  warnings        jsonb NOT NULL DEFAULT '[]',
  pushed_by       text,
  -- Set when the manifest was admitted as a child of this index rather than on its own.
  admitted_with   text,
  evaluations     integer NOT NULL DEFAULT 0,
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  decided_at      timestamptz,
  UNIQUE (repository_id, digest)
);
CREATE INDEX admissions_digest ON admissions (digest);
CREATE INDEX admissions_state ON admissions (state, updated_at);
