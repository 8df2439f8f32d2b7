-- The audit trail: append-only, hash-chained. Each record's hash covers its content and
-- the previous record's hash; signed checkpoints pin the head so that a rewritten chain
-- is detected too. The gateway only ever INSERTs here.
CREATE TABLE audit_log (
  seq         bigint PRIMARY KEY,
  at          timestamptz NOT NULL,
  action      text NOT NULL,
  repository  text,
  digest      text,
  principal   text,
  request_id  text,
  detail      jsonb NOT NULL DEFAULT '{}',
  prev_hash   text NOT NULL,
  hash        text NOT NULL
);
CREATE INDEX audit_log_repository ON audit_log (repository, seq) WHERE repository IS NOT NULL;
CREATE INDEX audit_log_digest ON audit_log (digest, seq) WHERE digest IS NOT NULL;
CREATE INDEX audit_log_principal ON audit_log (principal, seq) WHERE principal IS NOT NULL;
CREATE INDEX audit_log_action ON audit_log (action, seq);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE audit_checkpoints (
  seq         bigint PRIMARY KEY,
  hash        text NOT NULL,
  at          timestamptz NOT NULL,
  key_id      text NOT NULL,
  public_key  text NOT NULL,
  signature   text NOT NULL
);
