/**
 * The cryptographic primitives of repository format 3. A leaf: it imports node:crypto and
 * shared/errors.ts only, and everything but scrypt is synchronous and pure, so worker threads run it.
 * The format itself is described in docs/FORMAT.md ("Format 3").
 */
export { blobId, isBlobType, type BlobType } from './blob-id.js';
export { EnvelopeReader, type EnvelopeReaderOptions } from './envelope-reader.js';
export { EnvelopeWriter } from './envelope-writer.js';
export { DEFAULT_CHUNK_SHIFT, MAX_CHUNK_SHIFT, MIN_CHUNK_SHIFT, SEAL_HEADER_BYTES, SEAL_MAGIC, TAG_BYTES } from './envelope-format.js';
export {
  DEFAULT_KDF_COST,
  KDF_BOUNDS,
  KEY_FILE_MAX_BYTES,
  keyLabel,
  isKeyId,
  parseKeyFile,
  serializeKeyFile,
  unwrapMasterKey,
  validateKeyFile,
  wrapMasterKey,
  type KdfCost,
  type KdfParams,
  type KeyFile,
  type KeyOrigin,
} from './key-file.js';
export { blobLabel, isObjectName, objectLabel, packHeaderLabel } from './labels.js';
export { deriveKeys, keyFingerprint, newMasterKey, type RepoKeys } from './repo-keys.js';
export { open, openAfterByteInto, openInto, openedLength, seal, sealInto, sealedLength } from './seal.js';
export { SealError, type SealErrorKind } from './seal-error.js';
