/**
 * SBOMs in SPDX 2.x JSON and CycloneDX 1.4–1.6 JSON, normalized into one package list:
 * name, version, purl, licenses (SPDX ids or expressions as written).
 */
export interface SbomPackage {
  name: string;
  version: string | null;
  purl: string | null;
  licenses: string[];
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const str = (v: unknown): string | null => (typeof v === 'string' && v.length > 0 ? v : null);

export function sbomFormat(doc: unknown): 'spdx' | 'cyclonedx' | null {
  if (!isObject(doc)) return null;
  if (typeof doc.spdxVersion === 'string' || typeof doc.SPDXID === 'string') return 'spdx';
  if (doc.bomFormat === 'CycloneDX') return 'cyclonedx';
  return null;
}

export function sbomPackages(doc: unknown): SbomPackage[] {
  const format = sbomFormat(doc);
  if (format === 'spdx') return spdxPackages(doc as Json);
  if (format === 'cyclonedx') return cyclonedxPackages(doc as Json);
  throw new Error('not an SPDX or CycloneDX JSON document');
}

function spdxPackages(doc: Json): SbomPackage[] {
  const packages = Array.isArray(doc.packages) ? doc.packages : [];
  return packages.filter(isObject).map((p) => {
    const refs = Array.isArray(p.externalRefs) ? p.externalRefs.filter(isObject) : [];
    const purl = refs.find((r) => r.referenceType === 'purl');
    const licenses = [p.licenseConcluded, p.licenseDeclared]
      .map(str)
      .filter((l): l is string => l !== null && l !== 'NOASSERTION' && l !== 'NONE');
    return { name: str(p.name) ?? '', version: str(p.versionInfo), purl: str(purl?.referenceLocator), licenses: [...new Set(licenses)] };
  });
}

function cyclonedxPackages(doc: Json): SbomPackage[] {
  const out: SbomPackage[] = [];
  const walk = (components: unknown) => {
    if (!Array.isArray(components)) return;
    for (const c of components.filter(isObject)) {
      const licenses = (Array.isArray(c.licenses) ? c.licenses.filter(isObject) : [])
        .map((l) => (isObject(l.license) ? str(l.license.id) ?? str(l.license.name) : str(l.expression)))
        .filter((l): l is string => l !== null);
      out.push({ name: str(c.name) ?? '', version: str(c.version), purl: str(c.purl), licenses });
      walk(c.components);
    }
  };
  walk(doc.components);
  return out;
}
