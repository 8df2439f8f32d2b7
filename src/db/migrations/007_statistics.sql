-- No query selects or joins on these columns: the records' contents (JSON details, hashes,
-- decisions). ANALYZE need not read them, which keeps its cost small as the audit trail grows
-- (on PGlite the gateway runs ANALYZE itself; see Database.maintain).
ALTER TABLE audit_log ALTER COLUMN detail SET STATISTICS 0;
ALTER TABLE audit_log ALTER COLUMN prev_hash SET STATISTICS 0;
ALTER TABLE audit_log ALTER COLUMN hash SET STATISTICS 0;
ALTER TABLE audit_log ALTER COLUMN request_id SET STATISTICS 0;
ALTER TABLE admissions ALTER COLUMN results SET STATISTICS 0;
ALTER TABLE admissions ALTER COLUMN reasons SET STATISTICS 0;
ALTER TABLE admissions ALTER COLUMN waiting_for SET STATISTICS 0;
ALTER TABLE admissions ALTER COLUMN warnings SET STATISTICS 0;
ALTER TABLE admissions ALTER COLUMN evidence SET STATISTICS 0;
ALTER TABLE admissions ALTER COLUMN tags SET STATISTICS 0;
ALTER TABLE manifests ALTER COLUMN annotations SET STATISTICS 0;
ALTER TABLE scan_results ALTER COLUMN result SET STATISTICS 0;
