-- A blob's bytes may reach the disk after its upload is answered (storage.blobFlush=manifest,
-- the default): `flush_pending` names the upload whose bytes are not known to be flushed yet,
-- and is cleared once they are. A manifest that references the blob is accepted only after that
-- flush; after a crash, start-up hashes each blob still named here again and forgets those whose
-- bytes did not survive whole. NULL: the bytes are on disk (or in the row).
ALTER TABLE blobs ADD COLUMN flush_pending text;
CREATE INDEX blobs_flush_pending ON blobs (digest) WHERE flush_pending IS NOT NULL;
