export * from './admin-api.js';
export * from './api.js';
export * from './errors.js';
export * from './input-rules.js';
export * from './routes.js';
export * from './socket-client.js';
export * from './units.js';
