// Starts the server once for the whole run; the tests read where it is
// from test-results/server.json. The returned function stops it.
import { writeFileSync } from "node:fs";

import { start, stateFile } from "./server";
import { configureSignInWays } from "./signin-services";

export default async function globalSetup(): Promise<() => Promise<void>> {
  if (process.env.LECTERN_E2E_URL) return async () => undefined;
  const { server, stop } = await start();
  writeFileSync(stateFile, JSON.stringify(server, null, 2));
  try {
    await configureSignInWays(server);
  } catch (e) {
    await stop();
    throw e;
  }
  console.log(`e2e: lectern demo at ${server.url} (apps at ${server.url}/app/ and ${server.url}/admin/)`);
  return stop;
}
