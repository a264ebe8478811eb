/**
 * The console WebSocket's wire contract (GET /1.0/vms/{name}/console):
 * limits the daemon enforces and the close codes it ends a session with,
 * shared by the daemon and the CLI so both name the same reasons.
 */

/** Largest input frame a client may send; a bigger one ends the session (1009, from the WebSocket layer). */
export const CONSOLE_MAX_INPUT_FRAME = 64 * 1024;
/** Output a client may leave unread before it is dropped (default; the daemon may be told otherwise). */
export const CONSOLE_CLIENT_BUFFER_MAX = 1024 * 1024;
/** What one queued output message is charged against a client's cap beyond its payload (the daemon's estimate). */
export const CONSOLE_MESSAGE_OVERHEAD = 1024;
/** Clients one VM's console serves at once (default). */
export const CONSOLE_MAX_CLIENTS = 16;

export const CONSOLE_CLOSE = {
  /** The VM stopped or the daemon is shutting down. */
  ENDED: 1000,
  /** An input frame was larger than CONSOLE_MAX_INPUT_FRAME. */
  FRAME_TOO_BIG: 1009,
  /** The daemon could not attach to the VM's console (the reason says why). */
  ATTACH_FAILED: 1011,
  /** The client left more than its share of output unread: dropped so it cannot hold memory. */
  TOO_SLOW: 4001,
  /** The VM's console already serves as many clients as it may. */
  TOO_MANY_CLIENTS: 4002,
} as const;
