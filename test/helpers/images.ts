/**
 * OCI image layouts for end-to-end tests, in throwaway folders: built by hand (a gzip'd
 * tar layer from a small ustar writer, config JSON, manifest, index.json, oci-layout), with
 * umoci (init, new, unpack --rootless, add a file, repack), and a multi-arch index with
 * linux/amd64 and linux/arm64 children. Plus readers for layouts that clients wrote.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { umoci } from './clients.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
export const OCI_LAYER_GZIP = 'application/vnd.oci.image.layer.v1.tar+gzip';
export const REF_NAME = 'org.opencontainers.image.ref.name';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
  subject?: Descriptor;
  artifactType?: string;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export interface LayerFile {
  /** Path inside the image, without a leading slash: `etc/motd`. Parent folders are added. */
  path: string;
  content: string | Buffer;
  mode?: number;
}

/** One image (manifest + config + layers) stored in a layout. */
export interface LayoutImage {
  layout: string;
  /** The manifest's descriptor as index.json (or a parent index) lists it. */
  descriptor: Descriptor;
  manifestDigest: string;
  manifest: ImageManifest;
  configDigest: string;
  layerDigests: string[];
  platform: Platform;
}

export interface BuiltImage extends LayoutImage {
  tag: string;
  /** `oci:<layout>:<tag>`, as skopeo names it. */
  reference: string;
}

export interface BuiltIndex {
  layout: string;
  tag: string;
  reference: string;
  indexDigest: string;
  index: ImageIndex;
  children: LayoutImage[];
}

// ---- temp folders -------------------------------------------------------------------------

const tempDirs = new Set<string>();

/** A fresh temp folder, removed by removeTempDirs() (call it in after()). */
export function makeTempDir(prefix = 'e2e-'): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDirs(): void {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

// ---- digests ------------------------------------------------------------------------------

export function sha256(bytes: Buffer | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export function sha256File(file: string): string {
  return sha256(readFileSync(file));
}

// ---- a minimal ustar writer ---------------------------------------------------------------

const BLOCK = 512;
/** A fixed timestamp keeps layers (and so their digests) reproducible across runs. */
const EPOCH = Date.UTC(2024, 0, 1) / 1000;

function octal(value: number, width: number): string {
  return `${value.toString(8).padStart(width - 1, '0')}\0`;
}

function tarHeader(name: string, options: { size: number; mode: number; type: '0' | '5' }): Buffer {
  const header = Buffer.alloc(BLOCK, 0);
  let entryName = name;
  let prefix = '';
  if (Buffer.byteLength(entryName) > 100) {
    const cut = entryName.lastIndexOf('/', entryName.length - 2);
    prefix = entryName.slice(0, cut);
    entryName = entryName.slice(cut + 1);
    if (Buffer.byteLength(entryName) > 100 || Buffer.byteLength(prefix) > 155) throw new Error(`tar path too long: ${name}`);
  }
  header.write(entryName, 0, 100, 'utf8');
  header.write(octal(options.mode, 8), 100, 8, 'ascii');
  header.write(octal(0, 8), 108, 8, 'ascii'); // uid
  header.write(octal(0, 8), 116, 8, 'ascii'); // gid
  header.write(octal(options.size, 12), 124, 12, 'ascii');
  header.write(octal(EPOCH, 12), 136, 12, 'ascii');
  header.write('        ', 148, 8, 'ascii'); // checksum placeholder: eight spaces
  header.write(options.type, 156, 1, 'ascii');
  header.write('ustar\0', 257, 6, 'ascii');
  header.write('00', 263, 2, 'ascii');
  header.write('root', 265, 32, 'ascii');
  header.write('root', 297, 32, 'ascii');
  header.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  return header;
}

/** A tar archive of the files, with every parent folder listed once before its contents. */
export function makeTar(files: LayerFile[]): Buffer {
  const parts: Buffer[] = [];
  const dirs = new Set<string>();
  for (const file of files) {
    const clean = file.path.replace(/^\/+/, '');
    const segments = clean.split('/');
    for (let i = 1; i < segments.length; i++) {
      const dir = `${segments.slice(0, i).join('/')}/`;
      if (dirs.has(dir)) continue;
      dirs.add(dir);
      parts.push(tarHeader(dir, { size: 0, mode: 0o755, type: '5' }));
    }
    const content = typeof file.content === 'string' ? Buffer.from(file.content, 'utf8') : file.content;
    parts.push(tarHeader(clean, { size: content.length, mode: file.mode ?? 0o644, type: '0' }));
    parts.push(content);
    const pad = (BLOCK - (content.length % BLOCK)) % BLOCK;
    if (pad > 0) parts.push(Buffer.alloc(pad, 0));
  }
  parts.push(Buffer.alloc(BLOCK * 2, 0));
  return Buffer.concat(parts);
}

export interface Layer {
  /** The gzip'd tar, as stored in the layout and pushed. */
  blob: Buffer;
  digest: string;
  /** Digest of the uncompressed tar: the config's rootfs.diff_ids entry. */
  diffId: string;
}

export function makeLayer(files: LayerFile[]): Layer {
  const tar = makeTar(files);
  const blob = gzipSync(tar, { level: 9 });
  return { blob, digest: sha256(blob), diffId: sha256(tar) };
}

// ---- writing layouts ----------------------------------------------------------------------

/** An empty OCI image layout (oci-layout, index.json, blobs/sha256/). */
export function createLayout(dir = makeTempDir('layout-')): string {
  mkdirSync(path.join(dir, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(path.join(dir, 'oci-layout'), `${JSON.stringify({ imageLayoutVersion: '1.0.0' })}\n`);
  if (!existsSync(path.join(dir, 'index.json'))) writeIndexJson(dir, { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });
  return dir;
}

export function blobPath(layout: string, digest: string): string {
  const [algorithm, hex] = digest.split(':');
  if (!algorithm || !hex) throw new Error(`not a digest: ${digest}`);
  return path.join(layout, 'blobs', algorithm, hex);
}

export function writeBlob(layout: string, bytes: Buffer, mediaType: string): Descriptor {
  const digest = sha256(bytes);
  const file = blobPath(layout, digest);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, bytes);
  return { mediaType, digest, size: bytes.length };
}

function writeIndexJson(layout: string, index: ImageIndex): void {
  writeFileSync(path.join(layout, 'index.json'), JSON.stringify(index));
}

/** Lists a manifest in index.json under a tag, replacing an earlier entry with that tag. */
export function tagInLayout(layout: string, descriptor: Descriptor, tag: string): void {
  const index = readLayoutIndex(layout);
  index.manifests = index.manifests.filter((d) => d.annotations?.[REF_NAME] !== tag);
  index.manifests.push({ ...descriptor, annotations: { ...descriptor.annotations, [REF_NAME]: tag } });
  writeIndexJson(layout, index);
}

export interface ImageSpec {
  platform?: Platform;
  /** One entry per layer; each layer is a list of files. */
  layers: LayerFile[][];
  annotations?: Record<string, string>;
  cmd?: string[];
}

/** Writes config, layers and manifest of one image into a layout (without tagging it). */
export function writeImage(layout: string, spec: ImageSpec): LayoutImage {
  const platform = spec.platform ?? { os: 'linux', architecture: 'amd64' };
  const layers = spec.layers.map(makeLayer);
  const layerDescriptors = layers.map((l) => writeBlob(layout, l.blob, OCI_LAYER_GZIP));
  const config = {
    created: new Date(EPOCH * 1000).toISOString(),
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: spec.cmd ?? ['/bin/true'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((_, i) => ({ created: new Date(EPOCH * 1000).toISOString(), created_by: `e2e layer ${i}` })),
  };
  const configDescriptor = writeBlob(layout, Buffer.from(JSON.stringify(config)), OCI_CONFIG);
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: configDescriptor,
    layers: layerDescriptors,
    ...(spec.annotations ? { annotations: spec.annotations } : {}),
  };
  const descriptor = writeBlob(layout, Buffer.from(JSON.stringify(manifest)), OCI_MANIFEST);
  return {
    layout,
    descriptor: { ...descriptor, platform },
    manifestDigest: descriptor.digest,
    manifest,
    configDigest: configDescriptor.digest,
    layerDigests: layerDescriptors.map((d) => d.digest),
    platform,
  };
}

/** A layout holding one hand-built image under `tag`. */
export function buildImageLayout(options: { tag: string; layout?: string } & Partial<ImageSpec>): BuiltImage {
  const layout = createLayout(options.layout);
  const image = writeImage(layout, {
    platform: options.platform,
    layers: options.layers ?? [
      [
        { path: 'etc/e2e-release', content: `e2e image ${options.tag}\n` },
        { path: 'usr/share/e2e/random.bin', content: randomishBytes(options.tag, 3000) },
      ],
      [{ path: 'app/hello.txt', content: `hello from ${options.tag}\n` }],
    ],
    annotations: options.annotations,
    cmd: options.cmd,
  });
  // index.json entries of a single-image layout carry no platform, as skopeo and umoci write them.
  const { platform: _platform, ...descriptor } = image.descriptor;
  tagInLayout(layout, descriptor, options.tag);
  return { ...image, descriptor, tag: options.tag, reference: `oci:${layout}:${options.tag}` };
}

/**
 * A layout whose `tag` names an OCI index with a linux/amd64 and a linux/arm64 image,
 * each with its own layers (so every child has distinct blobs).
 */
export function buildMultiArchLayout(options: { tag: string; layout?: string }): BuiltIndex {
  const layout = createLayout(options.layout);
  const platforms: Platform[] = [
    { os: 'linux', architecture: 'amd64' },
    { os: 'linux', architecture: 'arm64', variant: 'v8' },
  ];
  const children = platforms.map((platform) =>
    writeImage(layout, {
      platform,
      layers: [
        [{ path: 'etc/arch', content: `${platform.os}/${platform.architecture}\n` }],
        [{ path: `opt/${platform.architecture}/payload.bin`, content: randomishBytes(`${options.tag}-${platform.architecture}`, 5000) }],
      ],
    }),
  );
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: children.map((c) => c.descriptor),
  };
  const descriptor = writeBlob(layout, Buffer.from(JSON.stringify(index)), OCI_INDEX);
  tagInLayout(layout, descriptor, options.tag);
  return { layout, tag: options.tag, reference: `oci:${layout}:${options.tag}`, indexDigest: descriptor.digest, index, children };
}

/**
 * An image built by umoci: `init`, `new`, `unpack --rootless`, a file added to the root
 * filesystem, `repack`. Returns what umoci wrote, read back from the layout.
 */
export async function buildUmociImage(options: { tag: string; files?: LayerFile[]; layout?: string }): Promise<BuiltImage & { bundle: string }> {
  const layout = options.layout ?? path.join(makeTempDir('umoci-'), 'layout');
  const bundle = path.join(path.dirname(layout), `bundle-${options.tag}`);
  const image = `${layout}:${options.tag}`;
  await umoci(['init', '--layout', layout]);
  await umoci(['new', '--image', image]);
  await umoci(['unpack', '--rootless', '--image', image, bundle]);
  const files = options.files ?? [{ path: 'hello.txt', content: `hello from umoci ${options.tag}\n` }];
  for (const file of files) {
    const target = path.join(bundle, 'rootfs', file.path);
    mkdirSync(path.dirname(target), { recursive: true });
    writeFileSync(target, file.content, { mode: file.mode ?? 0o644 });
  }
  await umoci(['repack', '--image', image, bundle]);
  await umoci(['config', '--image', image, '--config.cmd', '/hello.txt', '--author', 'e2e@example.test']);
  return { ...readLayoutImage(layout, options.tag), bundle };
}

/** Deterministic, poorly compressible bytes, so layers have some weight. */
function randomishBytes(seed: string, length: number): Buffer {
  const out = Buffer.alloc(length);
  let block = createHash('sha256').update(seed).digest();
  for (let offset = 0; offset < length; offset += block.length) {
    block.copy(out, offset, 0, Math.min(block.length, length - offset));
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

// ---- reading layouts ----------------------------------------------------------------------

export function readLayoutIndex(layout: string): ImageIndex {
  return JSON.parse(readFileSync(path.join(layout, 'index.json'), 'utf8')) as ImageIndex;
}

export function readLayoutBlob(layout: string, digest: string): Buffer {
  return readFileSync(blobPath(layout, digest));
}

/** The descriptor index.json lists under a tag; with no tag, the only entry. */
export function resolveLayoutTag(layout: string, tag?: string): Descriptor {
  const { manifests } = readLayoutIndex(layout);
  const matches = tag === undefined ? manifests : manifests.filter((d) => d.annotations?.[REF_NAME] === tag);
  if (matches.length !== 1) {
    throw new Error(`layout ${layout} lists ${matches.length} manifests for tag ${tag ?? '(any)'}: ${JSON.stringify(manifests)}`);
  }
  return matches[0];
}

/** Reads one image manifest from a layout, by tag or by its descriptor. */
export function readLayoutImage(layout: string, ref: string | Descriptor): BuiltImage {
  const descriptor = typeof ref === 'string' ? resolveLayoutTag(layout, ref) : ref;
  const bytes = readLayoutBlob(layout, descriptor.digest);
  if (sha256(bytes) !== descriptor.digest) throw new Error(`blob ${descriptor.digest} in ${layout} does not match its digest`);
  const manifest = JSON.parse(bytes.toString('utf8')) as ImageManifest;
  const config = JSON.parse(readLayoutBlob(layout, manifest.config.digest).toString('utf8')) as Platform;
  const tag = typeof ref === 'string' ? ref : (descriptor.annotations?.[REF_NAME] ?? '');
  return {
    layout,
    descriptor,
    manifestDigest: descriptor.digest,
    manifest,
    configDigest: manifest.config.digest,
    layerDigests: manifest.layers.map((l) => l.digest),
    platform: { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) },
    tag,
    reference: `oci:${layout}:${tag}`,
  };
}

/**
 * Checks that every blob an image references is in the layout with the right digest,
 * and returns the sha256 of each file (manifest, config, layers) as read from disk.
 */
export function verifyLayoutImage(layout: string, manifestDigest: string): Record<string, string> {
  const manifest = JSON.parse(readLayoutBlob(layout, manifestDigest).toString('utf8')) as ImageManifest;
  const hashes: Record<string, string> = {};
  for (const digest of [manifestDigest, manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
    const actual = sha256File(blobPath(layout, digest));
    if (actual !== digest) throw new Error(`blob ${digest} in ${layout} hashes to ${actual}`);
    hashes[digest] = actual;
  }
  return hashes;
}
