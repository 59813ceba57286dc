/**
 * A port another program holds, said the same way by `dev`, `serve` and `providers`: which
 * address, and the flag (and variable) that chooses another port. Never a raw EADDRINUSE; the
 * exit code is the runtime-failure one (1), as for any AddressInUse.
 */
import { AddressInUse } from '../errors.js';

/** How a command's user picks another port: its flag, the variable behind it, and a command line that does. */
export interface PortSetting {
  flag: string;
  env: string;
  example: string;
}

/** `err` as AddressInUse when it is a listen error for a taken address; anything else unchanged. */
export function asAddressInUse(err: unknown, what: string, host: string, port: number): unknown {
  if (err instanceof AddressInUse) return err;
  return (err as NodeJS.ErrnoException | undefined)?.code === 'EADDRINUSE' ? new AddressInUse(what, host, port, undefined, { cause: err }) : err;
}

const addressOf = (err: AddressInUse) => `${err.host.includes(':') ? `[${err.host}]` : err.host}:${err.port}`;

/** The taken port as a sentence: what could not start, on which address, and how to choose another port. */
export function portTaken(err: AddressInUse, setting: PortSetting): AddressInUse {
  return new AddressInUse(
    err.what,
    err.host,
    err.port,
    `cannot start ${err.what}: ${addressOf(err)} is already in use by another program. ` +
      `Stop it, or choose another port with ${setting.flag} or ${setting.env} (0 takes any free port), e.g. \`${setting.example}\``,
    { cause: err },
  );
}

/**
 * Several taken ports in one sentence (`dev` checks all of its ports before it starts anything),
 * so that a second try does not stop on the next one. `example` chooses other ports for all of them.
 */
export function portsTaken(taken: Array<{ err: AddressInUse; setting: PortSetting }>, example: string): AddressInUse {
  if (taken.length === 1) return portTaken(taken[0]!.err, taken[0]!.setting);
  const and = (parts: string[]) => parts.join(' and ');
  const first = taken[0]!.err;
  return new AddressInUse(
    and(taken.map((t) => t.err.what)),
    first.host,
    first.port,
    `cannot start ${and(taken.map((t) => t.err.what))}: ${and(taken.map((t) => addressOf(t.err)))} are already in use by other programs. ` +
      `Stop them, or choose other ports with ${and(taken.map((t) => `${t.setting.flag} (${t.setting.env})`))} (0 takes any free port), e.g. \`${example}\``,
    { cause: first },
  );
}
