-- What the evidence of an admission said when it was decided: signers, attestations, and the
-- normalized package list of attested SBOMs.
ALTER TABLE admissions ADD COLUMN evidence jsonb NOT NULL DEFAULT '{}';
