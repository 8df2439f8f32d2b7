/**
 * Development and webhook certificates: a local CA and a server certificate for a list of
 * DNS names and IP addresses, made with node-forge (RSA 2048, SHA-256).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import forge from 'node-forge';

export interface IssuedCertificates {
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
}

function serial(): string {
  // Positive 16-byte serial.
  return '01' + forge.util.bytesToHex(forge.random.getBytesSync(15));
}

export function makeCertificates(names: string[], days = 365, now = new Date()): IssuedCertificates {
  if (names.length === 0) throw new Error('give at least one DNS name or IP address');
  const notAfter = new Date(now.getTime() + days * 86_400_000);
  const caKeys = forge.pki.rsa.generateKeyPair(2048);
  const ca = forge.pki.createCertificate();
  ca.publicKey = caKeys.publicKey;
  ca.serialNumber = serial();
  ca.validity.notBefore = new Date(now.getTime() - 60_000);
  ca.validity.notAfter = notAfter;
  const caSubject = [{ name: 'commonName', value: 'oci-gateway local CA' }, { name: 'organizationName', value: 'oci-gateway' }];
  ca.setSubject(caSubject);
  ca.setIssuer(caSubject);
  ca.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  ca.sign(caKeys.privateKey, forge.md.sha256.create());

  const serverKeys = forge.pki.rsa.generateKeyPair(2048);
  const cert = forge.pki.createCertificate();
  cert.publicKey = serverKeys.publicKey;
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(now.getTime() - 60_000);
  cert.validity.notAfter = notAfter;
  cert.setSubject([{ name: 'commonName', value: names[0] }]);
  cert.setIssuer(caSubject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: names.map((n) => (isIP(n) ? { type: 7, ip: n } : { type: 2, value: n })) },
    { name: 'authorityKeyIdentifier', keyIdentifier: ca.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(caKeys.privateKey, forge.md.sha256.create());

  return {
    caCert: forge.pki.certificateToPem(ca),
    caKey: forge.pki.privateKeyToPem(caKeys.privateKey),
    serverCert: forge.pki.certificateToPem(cert),
    serverKey: forge.pki.privateKeyToPem(serverKeys.privateKey),
  };
}

export function writeCertificates(dir: string, certs: IssuedCertificates): string[] {
  mkdirSync(dir, { recursive: true });
  const files: Array<[string, string, number]> = [
    ['ca.crt', certs.caCert, 0o644],
    ['ca.key', certs.caKey, 0o600],
    ['server.crt', certs.serverCert, 0o644],
    ['server.key', certs.serverKey, 0o600],
  ];
  return files.map(([name, content, mode]) => {
    const file = path.join(dir, name);
    writeFileSync(file, content, { mode });
    return file;
  });
}
