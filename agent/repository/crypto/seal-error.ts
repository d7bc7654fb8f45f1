import { AdminError, ErrorCodes } from '../../../shared/errors.js';

/**
 * Why a sealed envelope (or a key file) was refused:
 * - `format`: not an envelope of this format, parameters out of bounds, or an encoding this format does
 *   not produce (structure only; nothing was decrypted);
 * - `auth`: a tag did not verify: a wrong key or label, or bytes changed, moved, added or cut inside the
 *   last chunk;
 * - `truncated`: the bytes end before a last chunk (in the header, with no room for a tag, or exactly
 *   at a chunk boundary after chunks that did verify).
 */
export type SealErrorKind = 'format' | 'auth' | 'truncated';

/**
 * A sealed envelope or key file that is refused: code CORRUPT, a one-line message that names what was
 * being opened (its label) and never carries key or plaintext bytes.
 */
export class SealError extends AdminError {
  readonly kind: SealErrorKind;
  constructor(kind: SealErrorKind, message: string) {
    super(ErrorCodes.CORRUPT, message);
    this.name = 'SealError';
    this.kind = kind;
  }
}
