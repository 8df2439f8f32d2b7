-- Registry metadata: repositories, content, manifests and their references, tags, uploads.
-- Content state: 'staged' (pushed, in quarantine) or 'committed' (admitted, servable).

CREATE TABLE repositories (
  id          bigserial PRIMARY KEY,
  name        text COLLATE "C" NOT NULL UNIQUE,
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per piece of content (layer, config or manifest bytes), global by digest.
CREATE TABLE blobs (
  digest      text PRIMARY KEY,
  size        bigint NOT NULL,
  state       text NOT NULL CHECK (state IN ('staged', 'committed')),
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- Which repository may serve which content (uploaded, mounted or pushed as a manifest there).
-- `committed` turns true when an admitted manifest of that repository references the content:
-- until then only principals with push rights on the repository may read it.
CREATE TABLE repository_blobs (
  repository_id bigint NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
  digest        text NOT NULL REFERENCES blobs(digest),
  committed     boolean NOT NULL DEFAULT false,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (repository_id, digest)
);
CREATE INDEX repository_blobs_digest ON repository_blobs (digest);

CREATE TABLE manifests (
  repository_id  bigint NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
  digest         text NOT NULL,
  media_type     text NOT NULL,
  size           bigint NOT NULL,
  artifact_type  text,
  subject_digest text,
  annotations    jsonb,
  state          text NOT NULL CHECK (state IN ('staged', 'committed')),
  created_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (repository_id, digest)
);
CREATE INDEX manifests_subject ON manifests (repository_id, subject_digest) WHERE subject_digest IS NOT NULL;

-- Edges from a manifest to what it needs: config, layers, index children.
CREATE TABLE manifest_references (
  repository_id   bigint NOT NULL,
  manifest_digest text NOT NULL,
  child_digest    text NOT NULL,
  kind            text NOT NULL CHECK (kind IN ('config', 'layer', 'manifest')),
  PRIMARY KEY (repository_id, manifest_digest, child_digest, kind),
  FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_references_child ON manifest_references (repository_id, child_digest);

CREATE TABLE tags (
  repository_id   bigint NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
  name            text COLLATE "C" NOT NULL,
  manifest_digest text NOT NULL,
  updated_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (repository_id, name),
  FOREIGN KEY (repository_id, manifest_digest) REFERENCES manifests(repository_id, digest) ON DELETE CASCADE
);

CREATE TABLE uploads (
  id            uuid PRIMARY KEY,
  repository_id bigint NOT NULL REFERENCES repositories(id) ON DELETE CASCADE,
  size          bigint NOT NULL DEFAULT 0,
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX uploads_updated ON uploads (updated_at);
