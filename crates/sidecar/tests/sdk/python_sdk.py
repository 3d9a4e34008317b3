"""The official Dapr Python SDK against the local sidecar.

Run by crates/sidecar/tests/it/sdk.rs with DAPR_HTTP_PORT and DAPR_GRPC_PORT pointing at a
sidecar that has a `statestore` state store, a `secretstore` holding `api-key`, and an `echo`
app reachable by invocation. Exits non-zero on the first mismatch.
"""

import json
import os

from dapr.clients import DaprClient
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._state import Concurrency, StateOptions


def check(condition, message):
    if not condition:
        raise SystemExit(f"python sdk: {message}")


with DaprClient() as client:
    # State: save, read with etag, optimistic concurrency, first-write, transactions, bulk.
    client.save_state("statestore", "py-order", json.dumps({"sdk": "python", "total": 3}))
    state = client.get_state("statestore", "py-order")
    check(json.loads(state.data) == {"sdk": "python", "total": 3}, f"unexpected state {state.data!r}")
    check(state.etag, "no etag")
    client.save_state("statestore", "py-order", "v2", etag=state.etag)
    try:
        client.save_state("statestore", "py-order", "v3", etag=state.etag)
        raise SystemExit("python sdk: a stale etag was accepted")
    except SystemExit:
        raise
    except Exception as error:  # noqa: BLE001 - the SDK raises grpc errors
        check("Aborted" in repr(error) or "ABORTED" in repr(error), f"stale etag gave {error!r}")
    try:
        client.save_state(
            "statestore", "py-order", "v4",
            options=StateOptions(concurrency=Concurrency.first_write),
        )
        raise SystemExit("python sdk: first-write overwrote an existing key")
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001
        pass
    client.execute_state_transaction(
        "statestore",
        operations=[
            TransactionalStateOperation(key="py-a", data="1"),
            TransactionalStateOperation(key="py-b", data="2"),
            TransactionalStateOperation(key="py-order", data="", operation_type=TransactionOperationType.delete),
        ],
    )
    bulk = client.get_bulk_state("statestore", keys=["py-a", "py-b", "py-order"]).items
    found = {item.key: item.data for item in bulk}
    check(found == {"py-a": b"1", "py-b": b"2", "py-order": b""}, f"bulk get gave {found!r}")
    client.delete_state("statestore", "py-a")
    check(client.get_state("statestore", "py-a").data == b"", "delete did not delete")

    # Secrets.
    secret = client.get_secret("secretstore", "api-key").secret
    check(secret == {"api-key": "k-123"}, f"secret was {secret!r}")
    bulk_secrets = client.get_bulk_secret("secretstore").secrets
    check("api-key" in bulk_secrets, f"bulk secrets were {bulk_secrets!r}")

    # Invocation over gRPC (the SDK's default) and over HTTP.
    response = client.invoke_method("echo", "hello/python", data=b"ping", http_verb="POST")
    echoed = json.loads(response.data)
    check(echoed["uri"] == "/hello/python" and echoed["body"] == "ping", f"invocation echoed {echoed!r}")

    # Metadata.
    metadata = client.get_metadata()
    check(metadata.application_id == os.environ["EXPECTED_APP_ID"], f"app id {metadata.application_id!r}")
    names = {component.name for component in metadata.registered_components}
    check({"statestore", "secretstore"} <= names, f"components {names!r}")

os.environ["DAPR_API_METHOD_INVOCATION_PROTOCOL"] = "http"
with DaprClient() as client:
    response = client.invoke_method("echo", "hello/http", data=b"pong", http_verb="PUT")
    echoed = json.loads(response.data)
    check(echoed["method"] == "PUT" and echoed["uri"] == "/hello/http", f"HTTP invocation echoed {echoed!r}")

print("python sdk: ok")
