// The official Dapr JavaScript SDK against the local sidecar, over HTTP and over gRPC.
//
// Run by crates/sidecar/tests/it/sdk.rs with DAPR_HTTP_PORT and DAPR_GRPC_PORT pointing at a
// sidecar that has a `statestore` state store, a `secretstore` holding `api-key`, and an `echo`
// app reachable by invocation. Exits non-zero on the first mismatch.

import { CommunicationProtocolEnum, DaprClient, HttpMethod } from "@dapr/dapr";

function check(condition, message) {
  if (!condition) {
    console.error(`js sdk: ${message}`);
    process.exit(1);
  }
}

async function exercise(protocol, port) {
  const client = new DaprClient({
    daprHost: "127.0.0.1",
    daprPort: port,
    communicationProtocol: protocol,
  });
  const key = `js-${protocol}`;
  await client.state.save("statestore", [{ key, value: { sdk: "js", protocol } }]);
  const value = await client.state.get("statestore", key);
  check(value && value.sdk === "js", `state was ${JSON.stringify(value)}`);

  await client.state.transaction("statestore", [
    { operation: "upsert", request: { key: `${key}-a`, value: "1" } },
    { operation: "delete", request: { key } },
  ]);
  const bulk = await client.state.getBulk("statestore", [`${key}-a`, key]);
  const found = Object.fromEntries(bulk.map((item) => [item.key, item.data]));
  check(String(found[`${key}-a`]) === "1", `bulk get gave ${JSON.stringify(bulk)}`);
  await client.state.delete("statestore", `${key}-a`);

  const secret = await client.secret.get("secretstore", "api-key");
  check(secret["api-key"] === "k-123", `secret was ${JSON.stringify(secret)}`);

  const echoed = await client.invoker.invoke("echo", `hello/${protocol}`, HttpMethod.POST, { n: 1 });
  check(echoed.uri === `/hello/${protocol}`, `invocation echoed ${JSON.stringify(echoed)}`);

  const metadata = await client.metadata.get();
  check(metadata.id === process.env.EXPECTED_APP_ID, `metadata was ${JSON.stringify(metadata)}`);
  await client.stop();
}

await exercise(CommunicationProtocolEnum.HTTP, process.env.DAPR_HTTP_PORT);
await exercise(CommunicationProtocolEnum.GRPC, process.env.DAPR_GRPC_PORT);
console.log("js sdk: ok");
process.exit(0);
