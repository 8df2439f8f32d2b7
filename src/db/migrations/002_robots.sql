-- Robot accounts for CI: long random secrets stored as SHA-256, scoped to repositories.
CREATE TABLE robots (
  name          text PRIMARY KEY,
  secret_sha256 text NOT NULL,
  repositories  jsonb NOT NULL,
  actions       jsonb NOT NULL,
  description   text NOT NULL DEFAULT '',
  created_at    timestamptz NOT NULL DEFAULT now(),
  rotated_at    timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz
);
