export * from './api.js';
export * from './errors.js';
export * from './socket-client.js';
export * from './units.js';
