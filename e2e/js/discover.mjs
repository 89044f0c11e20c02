// Client discovery as Element does it: matrix-js-sdk's AutoDiscovery finds
// the homeserver of a server name from /.well-known/matrix/client and checks
// it answers /_matrix/client/versions; then this script asks /versions
// itself. It prints one JSON object for the Go test to check.
import { AutoDiscovery } from "matrix-js-sdk";

const name = process.argv[2];
const config = await AutoDiscovery.findClientConfig(name);
const homeserver = config["m.homeserver"];
let versions = null;
if (homeserver.state === AutoDiscovery.SUCCESS) {
  const resp = await fetch(new URL("/_matrix/client/versions", homeserver.base_url));
  versions = { status: resp.status, body: await resp.json() };
}
console.log(JSON.stringify({ homeserver, versions }));
// matrix-js-sdk leaves each request's 5-second timeout timer running,
// which would keep Node alive that long for nothing.
process.exit(0);
