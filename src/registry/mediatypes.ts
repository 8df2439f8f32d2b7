export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociEmpty: 'application/vnd.oci.empty.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  dockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

export type ManifestKind = 'image' | 'index';

/** Media types accepted on manifest PUT, and whether they are image manifests or indexes. */
export const MANIFEST_KINDS: Record<string, ManifestKind> = {
  [MEDIA_TYPES.ociManifest]: 'image',
  [MEDIA_TYPES.dockerManifest]: 'image',
  [MEDIA_TYPES.ociIndex]: 'index',
  [MEDIA_TYPES.dockerManifestList]: 'index',
};

/** Strips parameters (`; charset=…`) and case from a Content-Type header. */
export function bareMediaType(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const bare = header.split(';')[0].trim().toLowerCase();
  return bare.length > 0 ? bare : undefined;
}
