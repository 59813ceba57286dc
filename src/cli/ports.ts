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

/** The taken port as a sentence: what could not start, on which address, and how to choose another port. */
export function portTaken(err: AddressInUse, setting: PortSetting): AddressInUse {
  const address = `${err.host.includes(':') ? `[${err.host}]` : err.host}:${err.port}`;
  return new AddressInUse(
    err.what,
    err.host,
    err.port,
    `cannot start ${err.what}: ${address} is already in use by another program. ` +
      `Stop it, or choose another port with ${setting.flag} or ${setting.env} (0 takes any free port), e.g. \`${setting.example}\``,
    { cause: err },
  );
}
