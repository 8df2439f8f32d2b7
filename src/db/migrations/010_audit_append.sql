-- One call that appends an audit record on PostgreSQL: it takes the append lock (held until
-- the caller's transaction ends), reads the newest record and inserts the next one, its hash
-- computed from that record's hash and the content the gateway serialised. Before, those were
-- three round trips between the gateway and the server, all with the lock held, while every
-- other append waited for it.
-- A function is needed, not one statement: it is VOLATILE, so each statement in it takes a
-- fresh snapshot, and the newest record is read after the lock is granted. PGlite runs one
-- transaction at a time and keeps the head in memory; it does not call this.
CREATE FUNCTION audit_append(
  lock_key bigint, p_at timestamptz, p_action text, p_repository text, p_digest text,
  p_principal text, p_request_id text, p_detail jsonb, p_content text
) RETURNS TABLE (seq bigint, prev_hash text, hash text)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
  head_seq bigint;
  head_hash text;
BEGIN
  PERFORM pg_advisory_xact_lock(lock_key);
  SELECT a.seq, a.hash INTO head_seq, head_hash FROM audit_log AS a ORDER BY a.seq DESC LIMIT 1;
  head_seq := COALESCE(head_seq, 0);
  head_hash := COALESCE(head_hash, 'sha256:' || repeat('0', 64));
  RETURN QUERY
    INSERT INTO audit_log AS a (seq, at, action, repository, digest, principal, request_id, detail, prev_hash, hash)
    VALUES (head_seq + 1, p_at, p_action, p_repository, p_digest, p_principal, p_request_id, p_detail, head_hash,
            'sha256:' || encode(sha256(convert_to(head_hash || E'\n' || p_content, 'UTF8')), 'hex'))
    RETURNING a.seq, a.prev_hash, a.hash;
END
$$;
