// Every test process (vitest setupFiles) and every process it spawns gets the tests' repository
// password through NODE_ADMIN_PASSWORD_FILE (test-password.ts).
import { ensureTestPasswordFile } from './test-password.js';

process.env.NODE_ADMIN_PASSWORD_FILE = ensureTestPasswordFile();
