-- A manifest's bytes are kept in its content row rather than as a file in the blob store:
-- manifests are small (at most the manifest size limit), and a push of one then creates,
-- flushes and renames no file, and commits by the state change alone. NULL: the bytes are in
-- the blob store (layers, configs, and manifests stored before this migration).
-- Stored out of line without compression once large (EXTERNAL): compressing would cost the
-- one thread PGlite runs on, for content read back whole and rarely.
ALTER TABLE blobs ADD COLUMN body bytea;
ALTER TABLE blobs ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE blobs ALTER COLUMN body SET STATISTICS 0;
