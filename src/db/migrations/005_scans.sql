-- Vulnerability scan results by content: the same digest scanned with the same database
-- version gives the same findings, so a re-push or a re-evaluation never rescans.
CREATE TABLE scan_results (
  subject_digest text NOT NULL,
  db_version     text NOT NULL,
  scanner        text NOT NULL,
  result         jsonb NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (subject_digest, db_version)
);
