#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests (run by .ci/k8s-check, which installs the tools).

1. Every kustomization under k8s/overlays (and k8s/base) renders, with kustomize v5 (the one
   built into kubectl, a `kustomize` binary, or the kustomize library that pykustomize ships).
2. Every rendered built-in object validates against the Kubernetes OpenAPI schemas
   (kubernetes-validate, strict: unknown fields fail) for the oldest and newest Kubernetes
   versions we support; every custom resource validates against k8s/schemas.
3. The manifests agree with the rest of the repository: one Deployment per app in apps/, the
   ports and app ids of dapr.yaml and the settings, component scopes and store names, the
   component sets in components/, the Dockerfile's build command, the Secrets docs/deploy.md
   tells operators to create; and the production rules (probes, limits, securityContext, PDB,
   HPA, graceful termination) hold for every app.

Exits non-zero listing every failure.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import referencing
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
# The oldest and newest Kubernetes minor versions the manifests are written for (preStop
# `sleep` and HPA ContainerResource need 1.30+; AKS, EKS and GKE support 1.31 and later).
KUBERNETES_VERSIONS = ["1.31.0", "1.34.0"]
# Apps of the shop (issue 4 and 6) and their ports; paygate runs outside the mesh.
APPS = {
    "gateway": 8080,
    "auth": 5001,
    "inventory": 5002,
    "orders": 5003,
    "payments": 5004,
    "notifications": 5005,
    "paygate": 5006,
}
NO_SIDECAR = {"paygate"}
# Deployments that only the dev overlays add (k8s/envs/dev).
DEV_TOOLS = {"mailpit"}
# The apps that own state, each with its own PostgreSQL (CloudNativePG Cluster <app>-db).
STATEFUL = {"auth", "inventory", "orders", "payments", "notifications"}
# Resources a broker brings; the rest must be the same whichever broker an overlay picks.
BROKER_KINDS = {"RabbitmqCluster", "Kafka", "KafkaNodePool", "KafkaTopic"}
BROKER_OBJECTS = {("Component", "pubsub"), ("NetworkPolicy", "rabbitmq")}
# The annotations Dapr's sidecar injector reads (Dapr 1.18, docs.dapr.io "Dapr arguments and
# annotations for daprd"); any other dapr.io/ annotation is a typo that the injector ignores.
DAPR_ANNOTATIONS = set("""
enabled app-port config app-protocol app-ssl app-id enable-profiling log-level api-token-secret
app-token-secret log-as-json app-max-concurrency enable-metrics metrics-port enable-debug
debug-port env env-from-secret grpc-port internal-grpc-port sidecar-cpu-request
sidecar-cpu-limit sidecar-memory-request sidecar-memory-limit sidecar-listen-addresses
sidecar-liveness-probe-delay-seconds sidecar-liveness-probe-timeout-seconds
sidecar-liveness-probe-period-seconds sidecar-liveness-probe-threshold
sidecar-readiness-probe-delay-seconds sidecar-readiness-probe-timeout-seconds
sidecar-readiness-probe-period-seconds sidecar-readiness-probe-threshold sidecar-image
sidecar-seccomp-profile-type http-max-request-size max-body-size http-read-buffer-size
read-buffer-size graceful-shutdown-seconds block-shutdown-duration enable-api-logging
unix-domain-socket-path volume-mounts volume-mounts-rw disable-builtin-k8s-secret-store
enable-app-health-check app-health-check-path app-health-probe-interval app-health-probe-timeout
app-health-threshold app-binding-options-timeout placement-host-address
actors-disseminate-timeout scheduler-host-address pluggable-components
pluggable-components-sockets-folder component-container inject-pluggable-components
app-channel-address sentry-request-jwt-audiences sidecar-svc-annotations
disable-init-endpoints enable-native-sidecar
""".split())
# Component metadata that differs by installation (where things are, which app is the actor
# store); every other value in components/<broker> must be the same in k8s.
PER_INSTALLATION_METADATA = {"connectionString", "tablePrefix", "actorStateStore", "secretsFile",
                             "rootPath", "brokers", "host", "port", "redisHost"}
SCHEMA_FILES = {
    ("dapr.io", "Component"): ("dapr.yaml", "Component"),
    ("dapr.io", "Configuration"): ("dapr.yaml", "Configuration"),
    ("dapr.io", "Resiliency"): ("dapr.yaml", "Resiliency"),
    ("postgresql.cnpg.io", "Cluster"): ("cloudnative-pg.yaml", "Cluster"),
    ("rabbitmq.com", "RabbitmqCluster"): ("rabbitmq.yaml", "RabbitmqCluster"),
    ("kafka.strimzi.io", "Kafka"): ("strimzi.yaml", "Kafka"),
    ("kafka.strimzi.io", "KafkaNodePool"): ("strimzi.yaml", "KafkaNodePool"),
    ("kafka.strimzi.io", "KafkaTopic"): ("strimzi.yaml", "KafkaTopic"),
}

failures: list[str] = []


def fail(where: str, message: str) -> None:
    failures.append(f"{where}: {message}")


def say(message: str) -> None:
    print(message, flush=True)


# --- 1. rendering -----------------------------------------------------------------------------


class Renderer:
    """kustomize v5: kubectl's, a kustomize binary's, or pykustomize's library (in that order)."""

    def __init__(self) -> None:
        self.describe = ""
        self._render = None
        # K8S_RENDERER=pykustomize picks the library even where kubectl exists (to test it).
        only = os.environ.get("K8S_RENDERER", "")
        kubectl = shutil.which("kubectl") if only in ("", "kubectl") else None
        if kubectl:
            out = subprocess.run([kubectl, "version", "--client", "-o", "json"],
                                 capture_output=True, text=True)
            try:
                info = json.loads(out.stdout)
                version = info.get("kustomizeVersion", "")
            except json.JSONDecodeError:
                version = ""
            if re.match(r"v?([5-9]|\d\d)\.", version):
                self.describe = f"kubectl {info['clientVersion']['gitVersion']} (kustomize {version})"
                self._render = lambda path: self._run([kubectl, "kustomize", str(path)])
                return
        binary = shutil.which("kustomize") if only in ("", "kustomize") else None
        if binary:
            version = subprocess.run([binary, "version"], capture_output=True, text=True).stdout.strip()
            if re.search(r"v([5-9]|\d\d)\.", version):
                self.describe = f"kustomize {version}"
                self._render = lambda path: self._run([binary, "build", str(path)])
                return
        library = os.environ.get("PYKUSTOMIZE_LIB")
        if library and Path(library).exists():
            lib = ctypes.CDLL(library)
            lib.pykustomize_version_string.restype = ctypes.c_char_p
            lib.pykustomize_last_error.restype = ctypes.c_char_p
            lib.pykustomize_build.argtypes = [ctypes.c_char_p, ctypes.c_char_p,
                                              ctypes.POINTER(ctypes.c_char_p)]
            self.describe = f"kustomize library of {lib.pykustomize_version_string().decode()}"

            def render(path: Path) -> str:
                result = ctypes.c_char_p()
                options = json.dumps({"load_restrictions": 0, "reorder": "legacy"}).encode()
                if lib.pykustomize_build(str(path).encode(), options, ctypes.byref(result)) != 0:
                    raise RuntimeError((lib.pykustomize_last_error() or b"unknown error").decode())
                return (result.value or b"").decode()

            self._render = render
            return
        raise SystemExit("no kustomize v5 found: install kubectl (1.27+) or kustomize, "
                         "or let .ci/k8s-check fetch pykustomize's library")

    @staticmethod
    def _run(command: list[str]) -> str:
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip() or f"exit code {out.returncode}")
        return out.stdout

    def render(self, path: Path) -> list[dict]:
        return [d for d in yaml.safe_load_all(self._render(path)) if d]


def overlays() -> list[Path]:
    return sorted(p for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())


# --- 2. schemas -------------------------------------------------------------------------------


def schema_registry() -> referencing.Registry:
    resources = []
    for file in sorted((K8S / "schemas").glob("*.yaml")):
        document = yaml.safe_load(file.read_text())
        resources.append((file.name, referencing.Resource.from_contents(document)))
        resources.append((document["$id"], referencing.Resource.from_contents(document)))
    return referencing.Registry().with_resources(resources)


def custom_validator(registry: referencing.Registry, group: str, kind: str):
    file, definition = SCHEMA_FILES[(group, kind)]
    schema = {"$ref": f"{file}#/$defs/{definition}"}
    return jsonschema.Draft202012Validator(schema, registry=registry,
                                           format_checker=jsonschema.FormatChecker())


def where(overlay: str, obj: dict) -> str:
    return f"{overlay}: {obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def validate_objects(overlay: str, objects: list[dict], registry) -> None:
    for obj in objects:
        api_version = obj.get("apiVersion", "")
        group = api_version.split("/")[0] if "/" in api_version else ""
        kind = obj.get("kind", "")
        if (group, kind) in SCHEMA_FILES:
            validator = custom_validator(registry, group, kind)
            for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
                path = "/".join(str(p) for p in error.absolute_path)
                fail(where(overlay, obj), f"{path or '(root)'}: {error.message[:300]}")
            continue
        if "." in group and not group.endswith(".k8s.io"):
            fail(where(overlay, obj), f"no schema for custom resource {api_version} {kind} "
                                      "(add one to k8s/schemas)")
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = "/".join(str(p) for p in error.path)
                fail(where(overlay, obj), f"Kubernetes {version}: {path}: {error.message[:300]}")
            except kubernetes_validate.SchemaNotFoundError as error:
                fail(where(overlay, obj), f"Kubernetes {version}: {error}")


# --- 3. consistency ---------------------------------------------------------------------------


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o.get("kind") == kind}


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def apps_in_workspace() -> dict[str, str]:
    """apps/<dir> -> package name, for the deployable apps: those with the app skeleton's
    settings.rs (STYLE.md). The launcher `shop`, or a load generator, is not one."""
    found = {}
    for manifest in sorted((ROOT / "apps").glob("*/Cargo.toml")):
        match = re.search(r'^name\s*=\s*"([^"]+)"', manifest.read_text(), re.M)
        if (match and match.group(1) != "shop"
                and (manifest.parent / "src" / "settings.rs").exists()):
            found[manifest.parent.name] = match.group(1)
    return found


def duration_seconds(text: str) -> int:
    return int(text)


def check_apps(overlay: str, objects: list[dict], workspace: dict[str, str]) -> None:
    deployments = by_kind(objects, "Deployment")
    services = by_kind(objects, "Service")
    accounts = by_kind(objects, "ServiceAccount")
    pdbs = by_kind(objects, "PodDisruptionBudget")
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    configurations = by_kind(objects, "Configuration")
    dev = overlay.startswith("dev")

    for app, package in workspace.items():
        if app not in deployments:
            fail(overlay, f"apps/{app} ({package}) has no Deployment")
    for name in list(deployments):
        if dev and name in DEV_TOOLS:
            del deployments[name]
        elif name not in APPS:
            fail(overlay, f"Deployment {name} is not an app of the shop")

    for name, deployment in deployments.items():
        w = f"{overlay}: Deployment/{name}"
        port = APPS.get(name)
        template = deployment["spec"]["template"]
        pod = template["spec"]
        annotations = template["metadata"].get("annotations", {})
        app = next((c for c in pod["containers"] if c["name"] == "app"), None)
        if app is None:
            fail(w, "no container named app")
            continue
        prefix = f"SHOP_{name.upper()}_"
        env = env_of(app)

        # The image is the one the Dockerfile builds for this app.
        if not re.fullmatch(rf"(.+/)?shop-{name}(:[\w.-]+)?(@sha256:[0-9a-f]+)?", app["image"]):
            fail(w, f"image {app['image']} is not shop-{name}")
        if name in workspace and workspace[name] != f"shop-{name}":
            fail(w, f"apps/{name} is package {workspace[name]}, the Dockerfile builds shop-{name}")

        # Ports: container, settings, sidecar annotation, dapr.yaml.
        ports = {p.get("name"): p["containerPort"] for p in app.get("ports", [])}
        if ports.get("http") != port:
            fail(w, f"container port http is {ports.get('http')}, the app's port is {port}")
        if env.get(prefix + "APP__PORT", {}).get("value") != str(port):
            fail(w, f"{prefix}APP__PORT is not {port}")
        if env.get(prefix + "APP__HOST", {}).get("value") != "0.0.0.0":
            fail(w, f"{prefix}APP__HOST must be 0.0.0.0 for probes from the kubelet")

        # Dapr.
        for key in annotations:
            if key.startswith("dapr.io/") and key.removeprefix("dapr.io/") not in DAPR_ANNOTATIONS:
                fail(w, f"{key} is not an annotation Dapr knows")
        enabled = annotations.get("dapr.io/enabled") == "true"
        # The NetworkPolicies let sidecars talk to sidecars by this pod label.
        if (template["metadata"].get("labels", {}).get("shop/mesh") == "dapr") != enabled:
            fail(w, "pod label shop/mesh=dapr must mark exactly the pods with a sidecar")
        if name in NO_SIDECAR:
            if enabled:
                fail(w, "paygate is the outside world: no Dapr sidecar")
        else:
            if not enabled:
                fail(w, "dapr.io/enabled is not \"true\"")
            expected = {
                "dapr.io/app-id": name,
                "dapr.io/app-port": str(port),
                "dapr.io/app-protocol": "http",
                "dapr.io/enable-metrics": "true",
            }
            for key, value in expected.items():
                if annotations.get(key) != value:
                    fail(w, f"annotation {key} is {annotations.get(key)!r}, expected {value!r}")
            for key in ["dapr.io/config", "dapr.io/log-as-json", "dapr.io/sidecar-cpu-request",
                        "dapr.io/sidecar-memory-request", "dapr.io/sidecar-cpu-limit",
                        "dapr.io/sidecar-memory-limit", "dapr.io/app-token-secret"]:
                if key not in annotations:
                    fail(w, f"annotation {key} is missing")
            if annotations.get("dapr.io/config") not in configurations:
                fail(w, f"dapr.io/config names no Configuration ({annotations.get('dapr.io/config')})")
            token = annotations.get("dapr.io/app-token-secret")
            ref = env.get("APP_API_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef", {})
            if ref.get("name") != token or ref.get("key") != "token":
                fail(w, "APP_API_TOKEN must come from the dapr.io/app-token-secret Secret (key token)")

        # Probes.
        for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
            got = app.get(probe, {}).get("httpGet", {}).get("path")
            if got != path:
                fail(w, f"{probe} is on {got}, expected {path}")

        # Resources.
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in app.get("resources", {}).get(kind, {}):
                    fail(w, f"resources.{kind}.{resource} is missing")

        # Restricted Pod Security.
        pod_security = pod.get("securityContext", {})
        container_security = app.get("securityContext", {})
        if not (pod_security.get("runAsNonRoot") or container_security.get("runAsNonRoot")):
            fail(w, "runAsNonRoot is not set")
        if pod_security.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
            fail(w, "seccompProfile RuntimeDefault is not set")
        if container_security.get("allowPrivilegeEscalation") is not False:
            fail(w, "allowPrivilegeEscalation is not false")
        if container_security.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(w, "capabilities are not dropped (ALL)")
        # Writable in development only, where Tilt's live update replaces the binary.
        if container_security.get("readOnlyRootFilesystem") is not True and not dev:
            fail(w, "the root filesystem is not read-only")

        # Graceful termination: the pod gets longer than the app's drain and the preStop pause,
        # and the sidecar stays up for the app's drain.
        drain = int(env.get(prefix + "APP__DRAIN_SECONDS", {}).get("value", "10"))
        pre_stop = app.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace <= drain + pre_stop:
            fail(w, f"terminationGracePeriodSeconds {grace} is not longer than preStop {pre_stop} "
                    f"+ drain {drain}")
        if enabled:
            # daprd keeps its API up for block-shutdown-duration (or until the app is
            # unhealthy), then takes graceful-shutdown-seconds to stop.
            block = annotations.get("dapr.io/block-shutdown-duration", "0s")
            match = re.fullmatch(r"(\d+)s", block)
            block_seconds = int(match.group(1)) if match else -1
            sidecar = int(annotations.get("dapr.io/graceful-shutdown-seconds", "5"))
            if block_seconds < drain + pre_stop:
                fail(w, f"dapr.io/block-shutdown-duration {block} must cover the app's preStop + "
                        f"drain ({pre_stop + drain}s), so that the app can use Dapr while it drains")
            if block_seconds + sidecar >= grace:
                fail(w, f"the sidecar's shutdown ({block} + {sidecar}s) must end before the grace "
                        f"period ({grace}s)")

        # Companions.
        if pod.get("serviceAccountName") != name or name not in accounts:
            fail(w, f"no ServiceAccount {name} of its own")
        selector = deployment["spec"]["selector"]["matchLabels"]
        service = services.get(name)
        if not service or service["spec"].get("selector") != selector:
            fail(w, "no Service selecting its pods")
        pdb = pdbs.get(name)
        if not pdb or pdb["spec"].get("selector", {}).get("matchLabels") != selector:
            fail(w, "no PodDisruptionBudget for its pods")
        horizontal = deployment["metadata"].get("labels", {}).get("shop/scale") == "horizontal"
        if horizontal and not dev and name not in hpas:
            fail(w, "a horizontally scaled app without a HorizontalPodAutoscaler")
        if name in hpas and not horizontal:
            fail(w, "a HorizontalPodAutoscaler for an app that must run alone")


def check_components(overlay: str, objects: list[dict], workspace: dict[str, str]) -> None:
    deployments = {n: d for n, d in by_kind(objects, "Deployment").items() if n not in DEV_TOOLS}
    sidecar_apps = {n for n, d in deployments.items()
                    if d["spec"]["template"]["metadata"].get("annotations", {}).get("dapr.io/enabled") == "true"}
    components = by_kind(objects, "Component")
    clusters = by_kind(objects, "Cluster")

    for name, component in components.items():
        w = f"{overlay}: Component/{name}"
        scopes = component.get("scopes")
        if not scopes:
            fail(w, "not scoped: every component names the apps that use it")
            continue
        for app in scopes:
            if app not in sidecar_apps:
                fail(w, f"scope {app} is not an app with a sidecar")

    # One state store per stateful app, seen by that app alone, named in its settings.
    for app in sorted(STATEFUL):
        store = f"{app}-statestore"
        component = components.get(store)
        w = f"{overlay}: {app}"
        if component is None:
            fail(w, f"no state store component {store}")
            continue
        if component.get("scopes") != [app]:
            fail(w, f"{store} is scoped to {component.get('scopes')}, not to {app} alone")
        refs = [m["secretKeyRef"]["name"] for m in component["spec"]["metadata"] if "secretKeyRef" in m]
        if refs != [f"{app}-db-app"] or f"{app}-db" not in clusters:
            fail(w, f"{store} does not read its own database's Secret ({app}-db-app of Cluster {app}-db)")
        deployment = deployments.get(app)
        if deployment:
            app_env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
            variable = f"SHOP_{app.upper()}_{app.upper()}__STATE_STORE"
            if app_env.get(variable, {}).get("value") != store:
                fail(w, f"{variable} does not name {store}")
        settings = ROOT / "apps" / app / "src" / "settings.rs"
        if settings.exists() and not re.search(rf"pub struct \w+Settings[^}}]*\bpub state_store\b",
                                               settings.read_text(), re.S):
            fail(w, f"apps/{app}/src/settings.rs has no {app}.state_store setting for "
                    f"{variable} to set")
    for app in sidecar_apps:
        actor_stores = [n for n, c in components.items() if app in c.get("scopes", [])
                        and any(m["name"] == "actorStateStore" and m.get("value") == "true"
                                for m in c["spec"]["metadata"])]
        if len(actor_stores) > 1:
            fail(f"{overlay}: {app}", f"sees several actor state stores: {actor_stores}")
    if not any(m["name"] == "actorStateStore" and m.get("value") == "true"
               for m in components.get("orders-statestore", {"spec": {"metadata": []}})["spec"]["metadata"]):
        fail(overlay, "orders' state store is not the actor state store its workflows need")


def component_role(name: str) -> str:
    return "statestore" if name.endswith("statestore") else name


def check_component_sets(overlay: str, objects: list[dict]) -> None:
    """components/<set> and the k8s overlay with the same broker: same components, same types."""
    broker = "kafka" if overlay.endswith("kafka") else "rabbitmq"
    local = {}
    for file in sorted((ROOT / "components" / broker).glob("*.yaml")):
        for document in yaml.safe_load_all(file.read_text()):
            if document and document.get("kind") == "Component":
                local[document["metadata"]["name"]] = document
    k8s: dict[str, set] = {}
    for name, component in by_kind(objects, "Component").items():
        k8s.setdefault(component_role(name), set()).add(
            (component["spec"]["type"], component["spec"]["version"]))
    for name, component in local.items():
        spec = component["spec"]
        if name == "secretstore":
            # Local files there, the namespace's Secrets here: same name, other type by design.
            if "secretstore" not in k8s:
                fail(overlay, "no `secretstore` component (components/ has one)")
            continue
        found = k8s.get(name)
        if not found:
            fail(overlay, f"components/{broker} has `{name}`, k8s has none")
        elif found != {(spec["type"], spec["version"])}:
            fail(overlay, f"`{name}` is {sorted(found)} in k8s, "
                          f"{spec['type']} {spec['version']} in components/{broker}")
    # Scopes: a component components/ gives to some apps only goes to the same apps here.
    for name, component in local.items():
        if not component.get("scopes"):
            continue
        for n, c in by_kind(objects, "Component").items():
            if component_role(n) == name and c.get("scopes") != component["scopes"]:
                fail(overlay, f"{n} is scoped to {c.get('scopes')}, to {component['scopes']} "
                              f"in components/{broker}/{name}")
    # Behaviour settings (not connection details) are the same as in components/<broker>.
    k8s_components = by_kind(objects, "Component")
    for name, component in local.items():
        counterparts = [c for n, c in k8s_components.items() if component_role(n) == name]
        for item in component["spec"].get("metadata") or []:
            if "value" not in item or item["name"] in PER_INSTALLATION_METADATA:
                continue
            for counterpart in counterparts:
                values = {m["name"]: m.get("value") for m in counterpart["spec"]["metadata"]}
                if values.get(item["name"]) != item["value"]:
                    fail(overlay, f"{counterpart['metadata']['name']}: {item['name']} is "
                                  f"{values.get(item['name'])!r}, {item['value']!r} in "
                                  f"components/{broker}/{name}")
    for role in k8s:
        if role not in local:
            fail(overlay, f"k8s has `{role}`, components/{broker} has none")
    # Resiliency: the same policies everywhere.
    resiliency = by_kind(objects, "Resiliency").get("shop")
    for file in sorted((ROOT / "components").glob("*/resiliency.yaml")):
        document = yaml.safe_load(file.read_text())
        if resiliency is None or document["spec"] != resiliency["spec"]:
            fail(overlay, f"Resiliency differs from {file.relative_to(ROOT)}")


def check_dapr_references(overlay: str, objects: list[dict]) -> None:
    apps = set(by_kind(objects, "Deployment")) - DEV_TOOLS
    for name, resiliency in by_kind(objects, "Resiliency").items():
        policies = resiliency["spec"]["policies"]
        kinds = {"timeout": "timeouts", "retry": "retries", "circuitBreaker": "circuitBreakers"}
        targets = resiliency["spec"]["targets"]
        refs = list(targets.get("apps", {}).items())
        for component, directions in targets.get("components", {}).items():
            refs += [(f"{component} {d}", r) for d, r in directions.items()]
        for target, ref in refs:
            for key, section in kinds.items():
                if key in ref and ref[key] not in policies.get(section, {}):
                    fail(f"{overlay}: Resiliency/{name}", f"{target} uses {key} {ref[key]!r}, "
                                                          f"not defined under policies.{section}")
        for app in targets.get("apps", {}):
            if app not in apps:
                fail(f"{overlay}: Resiliency/{name}", f"target app {app} is not deployed")
    for name, configuration in by_kind(objects, "Configuration").items():
        for policy in configuration["spec"].get("accessControl", {}).get("policies", []):
            if policy["appId"] not in apps:
                fail(f"{overlay}: Configuration/{name}", f"policy for unknown app {policy['appId']}")
        if configuration["spec"].get("accessControl", {}).get("defaultAction") != "deny":
            fail(f"{overlay}: Configuration/{name}", "accessControl must deny by default")


INVOKE = re.compile(
    r"\.invoke\(\s*Method::(?P<verb>[A-Z]+)\s*,[^;]*?(?:format!\()?\"(?P<path>/[^\"]*)\"",
    re.S,
)


def invocations_in_apps() -> list[tuple[str, str, str, str]]:
    """(caller app, HTTP verb, path, source) of every service invocation with a literal path in
    apps/*/src; `{...}` placeholders become one path segment."""
    calls = []
    for source in sorted(ROOT.glob("apps/*/src/**/*.rs")):
        app = source.relative_to(ROOT / "apps").parts[0]
        for match in INVOKE.finditer(source.read_text()):
            path = re.sub(r"\{[^}]*\}", "x", match["path"])
            calls.append((app, match["verb"], path, str(source.relative_to(ROOT))))
    return calls


def operation_matches(name: str, path: str) -> bool:
    """Dapr's accessControl operation names: `*` is one path segment, `**` any number."""
    pattern = re.escape(name).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.fullmatch(pattern, path) is not None


def check_invocations_allowed(overlay: str, objects: list[dict]) -> None:
    """Every call an app makes to another app through Dapr is allowed by accessControl."""
    for name, configuration in by_kind(objects, "Configuration").items():
        control = configuration["spec"].get("accessControl", {})
        policies = {p["appId"]: p for p in control.get("policies", [])}
        for app, verb, path, source in invocations_in_apps():
            policy = policies.get(app)
            if policy is None:
                allowed = control.get("defaultAction") == "allow"
            elif policy.get("defaultAction") == "allow":
                allowed = True
            else:
                allowed = any(
                    operation_matches(op["name"], path)
                    and (verb in op.get("httpVerb", ["*"]) or "*" in op.get("httpVerb", ["*"]))
                    and op.get("action") == "allow"
                    for op in policy.get("operations", [])
                )
            if not allowed:
                fail(f"{overlay}: Configuration/{name}",
                     f"{app} calls {verb} {path} ({source}) but accessControl denies it")


def check_broker_swap(rendered: dict[str, list[dict]]) -> None:
    """rabbitmq and kafka overlays of one environment differ only in the broker."""
    def rest(objects):
        return {(o["kind"], o["metadata"]["name"]): o for o in objects
                if o["kind"] not in BROKER_KINDS and (o["kind"], o["metadata"]["name"]) not in BROKER_OBJECTS}
    for environment in ("", "dev-", "prod-"):
        a, b = f"{environment}rabbitmq", f"{environment}kafka"
        if a not in rendered or b not in rendered:
            fail("overlays", f"{a} and {b} come as a pair")
            continue
        left, right = rest(rendered[a]), rest(rendered[b])
        for key in sorted(set(left) | set(right)):
            if left.get(key) != right.get(key):
                fail(f"{a} vs {b}", f"{key[0]}/{key[1]} differs: a broker overlay may swap only "
                                    "the pub/sub component and the broker")
        for overlay in (a, b):
            pubsub = by_kind(rendered[overlay], "Component").get("pubsub")
            if pubsub is None:
                fail(overlay, "no pubsub component")


def referenced_secrets(objects: list[dict]) -> set[str]:
    names = set()
    for obj in objects:
        kind = obj["kind"]
        if kind == "Deployment":
            template = obj["spec"]["template"]
            token = template["metadata"].get("annotations", {}).get("dapr.io/app-token-secret")
            if token:
                names.add(token)
            for container in template["spec"]["containers"]:
                for e in container.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        names.add(ref["name"])
        elif kind == "Component":
            for m in obj["spec"]["metadata"]:
                if "secretKeyRef" in m:
                    names.add(m["secretKeyRef"]["name"])
        elif kind == "Configuration":
            for scope in obj["spec"].get("secrets", {}).get("scopes", []):
                names.update(s for s in scope.get("allowedSecrets", []) if s != "jwt-previous-signing-key")
        elif kind == "Ingress":
            names.update(t["secretName"] for t in obj["spec"].get("tls", []) if "secretName" in t)
    return names


def check_secrets_documented(overlay: str, objects: list[dict]) -> None:
    made = {f"{c}-app" for c in by_kind(objects, "Cluster")}
    made |= {f"{r}-default-user" for r in by_kind(objects, "RabbitmqCluster")}
    # cert-manager issues the ingress certificate where the annotation asks for it.
    for ingress in by_kind(objects, "Ingress").values():
        if "cert-manager.io/cluster-issuer" in ingress["metadata"].get("annotations", {}):
            made |= {t["secretName"] for t in ingress["spec"].get("tls", [])}
    deploy = (ROOT / "docs" / "deploy.md").read_text() if (ROOT / "docs" / "deploy.md").exists() else ""
    created = set(re.findall(r"create secret (?:generic|tls) ([a-z0-9-]+)", deploy))
    for loop in re.findall(r"for app in ([a-z ]+); do\s*\n\s*kubectl[^\n]*create secret generic \"\$app-app-token\"", deploy):
        created |= {f"{a}-app-token" for a in loop.split()}
    for name in sorted(referenced_secrets(objects) - made - created):
        fail(overlay, f"Secret {name} is used but neither made by an operator nor created in docs/deploy.md")


def check_dockerfile(workspace: dict[str, str]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    if 'cargo build --release --locked -p "shop-${APP}"' not in dockerfile:
        fail("Dockerfile", "does not build with `cargo build --release --locked -p shop-$APP` as CI does")
    if '"target/release/shop-${APP}"' not in dockerfile:
        fail("Dockerfile", "does not take the binary target/release/shop-$APP")
    metadata = subprocess.run(["cargo", "metadata", "--no-deps", "--offline", "--format-version", "1"],
                              cwd=ROOT, capture_output=True, text=True)
    if metadata.returncode != 0:
        fail("Dockerfile", f"cargo metadata failed: {metadata.stderr.strip()[:300]}")
        return
    packages = {p["name"]: p for p in json.loads(metadata.stdout)["packages"]}
    for app, package in workspace.items():
        bins = [t["name"] for t in packages.get(package, {}).get("targets", []) if "bin" in t["kind"]]
        if bins != [f"shop-{app}"]:
            fail("Dockerfile", f"package {package} has binaries {bins}, the image expects shop-{app}")


def check_dapr_yaml_and_launcher(objects: list[dict]) -> None:
    deployments = by_kind(objects, "Deployment")
    run = yaml.safe_load((ROOT / "dapr.yaml").read_text())
    for app in run["apps"]:
        d = deployments.get(app["appID"])
        if d is None:
            fail("dapr.yaml", f"{app['appID']} has no Deployment")
            continue
        port = d["spec"]["template"]["metadata"]["annotations"].get("dapr.io/app-port")
        if str(app["appPort"]) != port:
            fail("dapr.yaml", f"{app['appID']} listens on {app['appPort']} there, {port} in k8s")
    launcher = (ROOT / "apps" / "shop" / "src" / "lib.rs").read_text()
    match = re.search(r"pub const APPS: &\[&str\] = &\[([^\]]*)\]", launcher)
    for app in re.findall(r'"([a-z]+)"', match.group(1) if match else ""):
        annotations = deployments.get(app, {}).get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
        if annotations.get("dapr.io/enabled") != "true":
            fail("apps/shop", f"the launcher runs {app} behind a sidecar; k8s has no such Deployment")
    for app, port in APPS.items():
        settings = ROOT / "apps" / app / "src" / "settings.rs"
        if settings.exists():
            # The standalone default, where an app sets one (`AppSettings { port: 8080, .. }`).
            default = re.search(r"AppSettings\s*\{\s*port:\s*(\d+)", settings.read_text())
            if default and int(default.group(1)) not in (0, port):
                fail(f"apps/{app}", f"default port {default.group(1)} differs from k8s ({port})")


def check_site_overlay(renderer: Renderer, registry) -> None:
    """k8s/site-overlay (docs/deploy.md, the deploy job) makes a valid installation."""
    site = ROOT / "target" / "k8s-tools" / "site-check"
    for broker in ("rabbitmq", "kafka"):
        shutil.rmtree(site, ignore_errors=True)
        out = subprocess.run([str(K8S / "site-overlay"), str(site), "--host", "shop.example.org",
                              "--registry", "registry.example.org/acme", "--tag", "v9.8.7",
                              "--broker", broker], capture_output=True, text=True)
        w = f"k8s/site-overlay --broker {broker}"
        if out.returncode != 0:
            fail(w, out.stderr.strip())
            continue
        try:
            objects = renderer.render(site)
        except RuntimeError as error:
            fail(w, f"does not render: {error}")
            continue
        validate_objects(f"site-{broker}", objects, registry)
        for d in by_kind(objects, "Deployment").values():
            image = d["spec"]["template"]["spec"]["containers"][0]["image"]
            name = d["metadata"]["name"]
            if image != f"registry.example.org/acme/shop-{name}:v9.8.7":
                fail(w, f"Deployment {name} runs {image}")
        ingress = by_kind(objects, "Ingress")["shop"]["spec"]
        if ingress["rules"][0]["host"] != "shop.example.org" or ingress["tls"][0]["hosts"] != ["shop.example.org"]:
            fail(w, "the ingress is not for shop.example.org")
        if '"https://shop.example.org"' not in by_kind(objects, "ConfigMap")["gateway-config"]["data"]["gateway.toml"]:
            fail(w, "the gateway does not allow the site's origin")
    shutil.rmtree(site, ignore_errors=True)
    for values in sorted((K8S / "dapr").glob("values*.yaml")):
        mtls = (yaml.safe_load(values.read_text()).get("global") or {}).get("mtls") or {}
        if mtls.get("enabled") is not True:
            fail(str(values.relative_to(ROOT)), "global.mtls.enabled is not true "
                                                "(accessControl relies on mTLS identities)")


def check_component_files(registry) -> None:
    """The local component sets are Dapr resources too: the same schema holds for them."""
    for file in sorted((ROOT / "components").glob("*/*.yaml")):
        for document in yaml.safe_load_all(file.read_text()):
            if not document:
                continue
            kind = document.get("kind", "")
            if ("dapr.io", kind) not in SCHEMA_FILES:
                fail(str(file.relative_to(ROOT)), f"{kind} is not a Dapr resource the schema knows")
                continue
            for error in custom_validator(registry, "dapr.io", kind).iter_errors(document):
                path = "/".join(str(p) for p in error.absolute_path)
                fail(str(file.relative_to(ROOT)), f"{path or '(root)'}: {error.message[:300]}")


def check_app_lists() -> None:
    """The other places that list the apps and their ports say the same as k8s/."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    matrix = {i["app"]: i["port"] for i in workflow["jobs"]["images"]["strategy"]["matrix"]["include"]}
    if matrix != APPS:
        fail(".github/workflows/ci.yml", f"the images matrix {matrix} is not the apps {APPS}")
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    loop = re.search(r"for app in ((?:[a-z]+:\d+ ?)+); do", deploy)
    listed = dict((a, int(p)) for a, p in (x.split(":") for x in loop.group(1).split())) if loop else {}
    if listed != APPS:
        fail("docs/deploy.md", f"the image build loop lists {listed}, not the apps {APPS}")
    for script in ("k8s/site-overlay", "tilt/dev-secrets"):
        names = re.search(r"(?:for app in|apps=\")([a-z ]+)", (ROOT / script).read_text())
        expected = set(APPS) - (NO_SIDECAR if script == "tilt/dev-secrets" else set())
        if not names or set(names.group(1).split()) != expected:
            fail(script, f"lists {names.group(1).split() if names else None}, expected {sorted(expected)}")


def main() -> int:
    renderer = Renderer()
    say(f"renderer: {renderer.describe}")
    say(f"kubernetes-validate {kubernetes_validate.version.__version__}, "
        f"Kubernetes {', '.join(KUBERNETES_VERSIONS)}")
    registry = schema_registry()
    workspace = apps_in_workspace()
    planned = sorted(set(APPS) - set(workspace))
    say(f"apps in the workspace: {', '.join(workspace)}; deployed ahead of their code: "
        f"{', '.join(planned) or 'none'}")

    rendered: dict[str, list[dict]] = {}
    for path in [K8S / "base", K8S / "deployer", *overlays()]:
        name = path.name if path.parent.name == "overlays" else path.name
        try:
            objects = renderer.render(path)
        except RuntimeError as error:
            fail(str(path.relative_to(ROOT)), f"does not render: {error}")
            continue
        rendered[name] = objects
        validate_objects(name, objects, registry)
        kinds = {}
        for o in objects:
            kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
        say(f"  {name}: {len(objects)} objects rendered and validated")
        if name in ("base", "deployer"):
            continue
        check_apps(name, objects, workspace)
        check_components(name, objects, workspace)
        check_component_sets(name, objects)
        check_dapr_references(name, objects)
        check_invocations_allowed(name, objects)
        check_secrets_documented(name, objects)
    check_broker_swap({k: v for k, v in rendered.items() if k not in ("base", "deployer")})
    if "rabbitmq" in rendered:
        check_dapr_yaml_and_launcher(rendered["rabbitmq"])
    check_dockerfile(workspace)
    check_site_overlay(renderer, registry)
    check_app_lists()
    check_component_files(registry)

    if failures:
        print(f"\n{len(failures)} problem(s) in the Kubernetes manifests:", file=sys.stderr)
        for failure in failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    say("manifests: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
