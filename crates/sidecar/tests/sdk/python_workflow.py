"""The Python durabletask SDK (`durabletask-dapr`, what `dapr-ext-workflow` builds on) against the
local sidecar's workflow engine.

Run by crates/sidecar/tests/it/sdk.rs with DAPR_GRPC_PORT pointing at a sidecar that has an actor
state store. Exits non-zero on the first mismatch; prints "python workflow sdk: ok" at the end.
"""

import os
import uuid

from durabletask import client, task, worker


def check(condition, message):
    if not condition:
        raise SystemExit(f"python workflow sdk: {message}")


def greet(ctx: task.ActivityContext, name: str) -> str:
    return f"hello {name}"


def sequence(ctx: task.OrchestrationContext, names: list):
    greetings = []
    for name in names:
        greetings.append((yield ctx.call_activity(greet, input=name)))
    parallel = yield task.when_all([ctx.call_activity(greet, input=n) for n in names])
    approver = yield ctx.wait_for_external_event("approve")
    return {"sequence": greetings, "parallel": parallel, "approver": approver}


def child(ctx: task.OrchestrationContext, n: int):
    return n * 2


def parent(ctx: task.OrchestrationContext, n: int):
    doubled = yield ctx.call_sub_orchestrator(child, input=n)
    yield ctx.create_timer(ctx.current_utc_datetime)
    return doubled + 1


address = f"127.0.0.1:{os.environ['DAPR_GRPC_PORT']}"
runner = worker.TaskHubGrpcWorker(host_address=address)
runner.add_orchestrator(sequence)
runner.add_orchestrator(child)
runner.add_orchestrator(parent)
runner.add_activity(greet)
runner.start()
try:
    hub = client.TaskHubGrpcClient(host_address=address)

    instance = hub.schedule_new_orchestration(sequence, input=["ada", "bob"], instance_id=f"py-{uuid.uuid4().hex}")
    started = hub.wait_for_orchestration_start(instance, timeout=30)
    check(started is not None, "the workflow did not start")
    hub.raise_orchestration_event(instance, "approve", data="carol")
    state = hub.wait_for_orchestration_completion(instance, timeout=60)
    check(state is not None, "no state after completion")
    check(state.runtime_status == client.OrchestrationStatus.COMPLETED, f"status {state.runtime_status}")
    import json

    output = json.loads(state.serialized_output)
    check(output["sequence"] == ["hello ada", "hello bob"], f"sequence gave {output!r}")
    check(output["parallel"] == ["hello ada", "hello bob"], f"fan-out gave {output!r}")
    check(output["approver"] == "carol", f"event gave {output!r}")

    instance = hub.schedule_new_orchestration(parent, input=20)
    state = hub.wait_for_orchestration_completion(instance, timeout=60)
    check(state.runtime_status == client.OrchestrationStatus.COMPLETED, f"parent status {state.runtime_status}")
    check(json.loads(state.serialized_output) == 41, f"parent gave {state.serialized_output!r}")

    hub.purge_orchestration(instance)
    check(hub.get_orchestration_state(instance) is None, "purge left the instance")
finally:
    runner.stop()

print("python workflow sdk: ok")
