#!/usr/bin/env python3
"""Runs the Tiltfile under a Starlark interpreter (starlark-pyo3) with stand-ins for Tilt's
built-in functions that record what Tilt would do, and checks it, for each broker and build
mode: the overlay it applies (rendered for real with kustomize), the images it builds and that
the rendered Deployments use, the resources it groups every object into, their dependencies,
port-forwards and labels; and that a cluster without Dapr or an operator stops it with install
instructions. Run by .ci/k8s-check; prints "N passed, N failed".
"""

from __future__ import annotations

import subprocess
import sys
import traceback
from pathlib import Path

import starlark as sl
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "k8s"))
import check  # noqa: E402  (k8s/check.py: the renderer and the app table)

RENDERER = check.Renderer()
ALL_CRDS = {
    "components.dapr.io", "configurations.dapr.io", "clusters.postgresql.cnpg.io",
    "rabbitmqclusters.rabbitmq.com", "kafkas.kafka.strimzi.io", "kafkanodepools.kafka.strimzi.io",
}
IMAGE = "ghcr.io/dapr-shop/shop-"


class TiltfileFailed(Exception):
    pass


# Tilt's signatures (Tilt 0.37 API reference, docs.tilt.dev/api.html; the restart_process
# extension's README): parameters in positional order, required ones marked with "!". A call
# with an argument Tilt does not have fails here as it would in Tilt.
SIGNATURES = {
    "docker_build": ["ref!", "context!", "build_args", "dockerfile", "dockerfile_contents",
                     "live_update", "match_in_env_vars", "ignore", "only", "entrypoint", "target",
                     "ssh", "network", "secret", "extra_tag", "container_args", "cache_from",
                     "pull", "platform", "extra_hosts"],
    "local_resource": ["name!", "cmd", "deps", "trigger_mode", "resource_deps", "ignore",
                       "auto_init", "serve_cmd", "cmd_bat", "serve_cmd_bat", "allow_parallel",
                       "links", "labels", "env", "serve_env", "readiness_probe", "dir", "serve_dir"],
    "k8s_resource": ["workload", "new_name", "port_forwards", "extra_pod_selectors",
                     "trigger_mode", "resource_deps", "objects", "auto_init", "pod_readiness",
                     "links", "labels", "discovery_strategy"],
    "k8s_kind": ["kind!", "api_version", "*image_json_path", "*image_object_json_path",
                 "*pod_readiness"],
    "k8s_yaml": ["yaml!", "allow_duplicates"],
    "kustomize": ["pathToDir!", "kustomize_bin", "flags"],
    "local": ["command!", "quiet", "command_bat", "echo_off", "env", "dir", "stdin"],
    "sync": ["local_path!", "remote_path!"],
    "link": ["url!", "name"],
    "update_settings": ["max_parallel_updates", "k8s_upsert_timeout_secs",
                        "suppress_unused_image_warnings", "k8s_server_side_apply"],
    "define_string": ["name!", "args", "usage"],
}
# restart_process: docker_build_with_restart(ref, context, entrypoint, live_update,
# base_suffix, restart_file, **kwargs), the kwargs going to docker_build.
SIGNATURES["docker_build_with_restart"] = (
    ["ref!", "context!", "entrypoint!", "live_update!", "base_suffix", "restart_file"]
    + [p for p in SIGNATURES["docker_build"][2:] if p not in ("live_update", "entrypoint")]
)


def check_signature(name: str, args: tuple, kwargs: dict) -> None:
    params = SIGNATURES[name]
    positional = [p.rstrip("!") for p in params if not p.startswith("*")]
    names = [p.lstrip("*").rstrip("!") for p in params]
    if len(args) > len(positional):
        raise TiltfileFailed(f"{name}: {len(args)} positional arguments, at most {len(positional)}")
    given = positional[:len(args)]
    for key in kwargs:
        if key not in names:
            raise TiltfileFailed(f"{name}: unexpected keyword argument {key!r}")
        if key in given:
            raise TiltfileFailed(f"{name}: {key!r} given twice")
    for p in params:
        if p.endswith("!") and p.lstrip("*").rstrip("!") not in given + list(kwargs):
            raise TiltfileFailed(f"{name}: missing argument {p.rstrip('!')!r}")


class FakeTilt:
    """Tilt's API as far as the Tiltfile uses it, recording every call."""

    def __init__(self, args: list[str], crds: set[str], dapr_injector: bool = True):
        self.args = args
        self.crds = crds
        self.dapr_injector = dapr_injector
        self.calls: list[tuple[str, tuple, dict]] = []
        self.objects: list[dict] = []
        self.overlays: list[str] = []
        self.defined: set[str] = set()

    def record(self, name):
        def call(*args, **kwargs):
            check_signature(name, args, kwargs)
            self.calls.append((name, args, kwargs))
            return {"builtin": name, "args": list(args), "kwargs": kwargs}
        return call

    def of(self, name):
        return [(a, k) for n, a, k in self.calls if n == name]

    # config.*
    def define_string(self, *args, **kwargs):
        check_signature("define_string", args, kwargs)
        self.defined.add(args[0] if args else kwargs["name"])

    def parse(self):
        parsed = {}
        for arg in self.args:
            key, _, value = arg.lstrip("-").partition("=")
            if key not in self.defined:
                raise TiltfileFailed(f"unknown argument {arg}")
            parsed[key] = value
        return parsed

    def local(self, *args, **kwargs):
        check_signature("local", args, kwargs)
        command = args[0] if args else kwargs["command"]
        self.calls.append(("local", (command,), kwargs))
        if command.startswith("kubectl get crd "):
            crd = command.split()[3]
            return "yes" if crd in self.crds else "no"
        if command.startswith("kubectl get deployment --namespace dapr-system dapr-sidecar-injector"):
            return "yes" if self.dapr_injector else "no"
        if command == "tilt/dev-secrets --names":
            return subprocess.run(["tilt/dev-secrets", "--names"], cwd=ROOT, check=True,
                                  capture_output=True, text=True).stdout
        if command == "tilt/dev-secrets":
            # The real script generates keys into .data; the test needs only the objects.
            names = self.local("tilt/dev-secrets --names").split()
            return "".join(f"---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {n}\n"
                           f"  namespace: shop\nstringData:\n  value: x\n" for n in names)
        raise TiltfileFailed(f"unexpected local command: {command}")

    def kustomize(self, *args, **kwargs):
        check_signature("kustomize", args, kwargs)
        path = args[0] if args else kwargs["pathToDir"]
        self.overlays.append(path)
        return {"kustomize": path}

    def k8s_yaml(self, *args, **kwargs):
        check_signature("k8s_yaml", args, kwargs)
        source = args[0] if args else kwargs["yaml"]
        if isinstance(source, dict) and "kustomize" in source:
            self.objects += RENDERER.render(ROOT / source["kustomize"])
        elif isinstance(source, str):
            self.objects += [d for d in yaml.safe_load_all(source) if d]
        else:
            raise TiltfileFailed(f"k8s_yaml of {source!r}")

    def run(self, argv: list[str]) -> None:
        module = sl.Module()
        for name in ["docker_build", "local_resource", "k8s_resource", "k8s_kind", "sync",
                     "update_settings", "link", "docker_build_with_restart"]:
            module.add_callable(name, self.record(name))
        module.add_callable("local", self.local)
        module.add_callable("kustomize", self.kustomize)
        module.add_callable("k8s_yaml", self.k8s_yaml)
        module.add_callable("_define_string", self.define_string)
        module.add_callable("_parse", self.parse)
        dialect = sl.Dialect.extended()
        dialect.enable_top_level_stmt = True
        dialect.enable_load = True
        dialect.enable_f_strings = True
        extensions = sl.Globals.extended_by([sl.LibraryExtension.StructType,
                                             sl.LibraryExtension.Print,
                                             sl.LibraryExtension.Json])
        sl.eval(module, sl.parse("prelude", "config = struct(define_string = _define_string, "
                                           "parse = _parse)\n", dialect), extensions)

        def load(path: str):
            if path == "ext://restart_process":
                ext = sl.Module()
                ext.add_callable("docker_build_with_restart", self.record("docker_build_with_restart"))
                return ext.freeze()
            if not path.startswith("./"):
                raise TiltfileFailed(f"load of {path}")
            loaded = sl.Module()
            for name in ["docker_build", "local_resource", "sync", "link"]:
                loaded.add_callable(name, self.record(name))
            loaded.add_callable("local", self.local)
            source = (ROOT / path[2:]).read_text()
            sl.eval(loaded, sl.parse(path, source, dialect), extensions, sl.FileLoader(load))
            return loaded.freeze()

        tiltfile = (ROOT / "Tiltfile").read_text()
        try:
            sl.eval(module, sl.parse("Tiltfile", tiltfile, dialect), extensions, sl.FileLoader(load))
        except sl.StarlarkError as error:
            raise TiltfileFailed(str(error)) from error


# --- what a run must look like ------------------------------------------------------------------

def resources(tilt: FakeTilt) -> dict[str, dict]:
    """Tilt resource name -> its k8s_resource/local_resource arguments."""
    found = {}
    for args, kwargs in tilt.of("k8s_resource"):
        name = kwargs.get("new_name") or (args[0] if args else kwargs.get("workload"))
        found[name] = {"workload": None if kwargs.get("new_name") else name, **kwargs}
    for args, kwargs in tilt.of("local_resource"):
        found[args[0]] = {"local": True, **kwargs}
    return found


def check_run(tilt: FakeTilt, broker: str, build: str) -> None:
    assert tilt.overlays == [f"k8s/overlays/dev-{broker}"], tilt.overlays
    objects = tilt.objects
    key = lambda o: f"{o['metadata']['name']}:{o['kind'].lower()}"  # noqa: E731
    by_key = {key(o): o for o in objects}
    # Tilt refuses an object fragment that matches several objects.
    assert len(by_key) == len(objects), "two objects share a name and kind"
    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}

    # Images: one per app, each used by its Deployment, and every shop image is built.
    built = {}
    name = "docker_build_with_restart" if build == "local" else "docker_build"
    for args, kwargs in tilt.of(name):
        built[args[0]] = (args, kwargs)
    assert not tilt.of("docker_build" if build == "local" else "docker_build_with_restart")
    for app, port in check.APPS.items():
        ref = IMAGE + app
        assert ref in built, f"no image built for {app}"
        image = deployments[app]["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.split(":")[0] == ref, f"{app} runs {image}, Tilt builds {ref}"
        args, kwargs = built[ref]
        assert kwargs["build_args"]["PORT"] == str(port), (app, kwargs["build_args"])
        if build == "local":
            assert kwargs["dockerfile"] == "tilt/Dockerfile.dev"
            assert kwargs["entrypoint"] == ["/app/app"]
            assert kwargs["restart_file"].startswith("/app/"), "the app's user must own the restart file"
            syncs = [s for s in kwargs["live_update"] if s["builtin"] == "sync"]
            assert syncs and syncs[0]["args"] == [f"target/tilt/{app}/app", "/app/app"], syncs
            dockerfile = (ROOT / "tilt" / "Dockerfile.dev").read_text()
            assert "COPY --chown=65532:65532 app /app/app" in dockerfile and "-o 65532" in dockerfile
            compile_ = resources(tilt)[f"build-{app}"]
            assert f"cargo build --release --locked -p shop-{app}" in compile_["cmd"], compile_["cmd"]
            assert f"apps/{app}" in compile_["deps"]
        else:
            assert kwargs["dockerfile"] == "Dockerfile" and kwargs["build_args"]["APP"] == app
    for d in deployments.values():
        image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        if image.startswith(IMAGE):
            assert image.split(":")[0] in built, f"{image} is deployed but not built"

    # Resources: every object in exactly one, every workload exists, every dependency too.
    found = resources(tilt)
    workload_kinds = {"Deployment"} | {args[0] for args, _ in tilt.of("k8s_kind")}
    workloads = {o["metadata"]["name"] for o in objects if o["kind"] in workload_kinds}
    covered: dict[str, str] = {}
    for rname, r in found.items():
        if r.get("local"):
            continue
        if r["workload"]:
            assert r["workload"] in workloads, f"k8s_resource({r['workload']!r}) matches no workload"
            covered[r["workload"]] = rname
        for obj in r.get("objects", []):
            assert obj in by_key, f"resource {rname} names {obj}, which {broker} does not render"
            assert obj not in covered, f"{obj} is in two resources"
            covered[obj] = rname
    pod_labels = [d["spec"]["template"]["metadata"].get("labels", {}) for d in deployments.values()]
    for o in objects:
        if o["kind"] in workload_kinds:
            continue
        # Tilt attaches a Service to the workload whose pod labels its selector matches (and
        # nothing else); every other object must be named in some resource's objects.
        selector = o.get("spec", {}).get("selector") if o["kind"] == "Service" else None
        if selector and any(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels):
            continue
        assert key(o) in covered, f"{key(o)} is in no resource (Tilt would show it as uncategorized)"
    for rname, r in found.items():
        assert r.get("labels"), f"resource {rname} has no label"
        for dep in r.get("resource_deps", []):
            assert dep in found, f"{rname} depends on {dep}, which is no resource"
    apps = yaml.safe_load  # noqa: F841  (kept simple below)
    for app in check.APPS:
        deps = found[app]["resource_deps"]
        if app in check.STATEFUL:
            assert f"{app}-db" in deps, (app, deps)
        if app not in check.NO_SIDECAR:
            assert "platform" in deps, (app, deps)
        if build == "local":
            assert f"build-{app}" in deps, (app, deps)
    broker_resource = {"rabbitmq": "shop-rabbitmq", "kafka": "shop-kafka"}[broker]
    assert broker_resource in found and "orders" in found and broker_resource in found["orders"]["resource_deps"]
    other = {"rabbitmq": "shop-kafka", "kafka": "shop-rabbitmq"}[broker]
    assert other not in found, f"{other} with --broker={broker}"
    assert not [o for o in objects if o["kind"] in ({"Kafka"} if broker == "rabbitmq" else {"RabbitmqCluster"})]

    # No cycles in the dependencies.
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 1:
            raise AssertionError(f"dependency cycle: {' -> '.join(path + [node])}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in found[node].get("resource_deps", []):
            visit(dep, path + [node])
        state[node] = 2
    for node in found:
        visit(node, [])

    # The gateway on localhost:8080, where its container listens.
    assert found["gateway"]["port_forwards"] == ["8080:8080"]
    port = deployments["gateway"]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert port == 8080
    assert any(r.get("port_forwards") for n, r in found.items() if "dashboard" in str(r.get("labels")))
    # Tilt's apps table and k8s/check.py's agree.
    table = (ROOT / "tilt" / "apps.star").read_text()
    for app, p in check.APPS.items():
        assert f'"{app}": {{"port": {p},' in table, f"tilt/apps.star: {app} is not on port {p}"


def expect_failure(tilt: FakeTilt, *needles: str) -> None:
    try:
        tilt.run([])
    except TiltfileFailed as error:
        for needle in needles:
            assert needle in str(error), f"{needle!r} not in: {error}"
        assert not tilt.objects, "applied manifests before the check failed"
        return
    raise AssertionError("the Tiltfile did not stop")


def main() -> int:
    cases = []

    def case(name):
        def register(fn):
            cases.append((name, fn))
            return fn
        return register

    for broker, args in [("rabbitmq", []), ("kafka", ["--broker=kafka"])]:
        for build, extra in [("local", []), ("docker", ["--build=docker"])]:
            @case(f"tilt up {' '.join(['--'] + args + extra) if args or extra else ''}".strip())
            def _(broker=broker, build=build, argv=args + extra):
                tilt = FakeTilt(argv, ALL_CRDS)
                tilt.run(argv)
                check_run(tilt, broker, build)

    @case("a cluster without Dapr is told how to install it")
    def _():
        tilt = FakeTilt([], ALL_CRDS, dapr_injector=False)
        expect_failure(tilt, "Dapr is not installed", "helm upgrade --install dapr dapr/dapr")

    @case("a cluster without CloudNativePG and RabbitMQ's operator is told how to install both")
    def _():
        tilt = FakeTilt([], ALL_CRDS - {"clusters.postgresql.cnpg.io", "rabbitmqclusters.rabbitmq.com"})
        expect_failure(tilt, "CloudNativePG is not installed", "cnpg-1.30.0.yaml",
                       "RabbitMQ Cluster Operator is not installed")

    @case("--broker=kafka without Strimzi is told how to install it, RabbitMQ's operator is not needed")
    def _():
        argv = ["--broker=kafka"]
        tilt = FakeTilt(argv, ALL_CRDS - {"kafkas.kafka.strimzi.io", "rabbitmqclusters.rabbitmq.com"})
        try:
            tilt.run(argv)
        except TiltfileFailed as error:
            assert "Strimzi is not installed" in str(error) and "RabbitMQ" not in str(error), error
            return
        raise AssertionError("the Tiltfile did not stop")

    @case("an unknown broker is refused")
    def _():
        tilt = FakeTilt(["--broker=nats"], ALL_CRDS)
        try:
            tilt.run(["--broker=nats"])
        except TiltfileFailed as error:
            assert "choose one of rabbitmq, kafka" in str(error), error
            return
        raise AssertionError("the Tiltfile accepted --broker=nats")

    @case("the stand-ins refuse arguments Tilt does not have")
    def _():
        for name, args, kwargs in [("k8s_resource", ("gateway",), {"label": ["apps"]}),
                                   ("docker_build", ("image",), {}),
                                   ("sync", ("a", "b", "c"), {}),
                                   ("docker_build_with_restart", ("i", ".", ["/app"], []), {"targett": "x"})]:
            try:
                check_signature(name, args, kwargs)
            except TiltfileFailed:
                continue
            raise AssertionError(f"{name}{args}{kwargs} was accepted")

    passed = failed = 0
    for name, fn in cases:
        try:
            fn()
            print(f"ok   {name}")
            passed += 1
        except Exception:  # noqa: BLE001  (report every case, then fail)
            print(f"FAIL {name}")
            traceback.print_exc()
            failed += 1
    print(f"tiltfile: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
