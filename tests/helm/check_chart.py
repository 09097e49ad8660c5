#!/usr/bin/env python3
"""Checks the Helm chart in charts/ringtail without a helm binary or a cluster.

Run it through scripts/test-helm.sh, which installs tests/helm/requirements.txt into
.venv first. What it does:

1. helm lint (Helm's Go SDK through helm-python-sdk) with the default values and with
   every charts/ringtail/ci/*.yaml; any warning or error fails.
2. Renders the chart (same SDK, offline, values.schema.json applied) with the default
   values and with ci/s3-zones-values.yaml, and validates every rendered object with
   kubernetes-validate's strict schemas (unknown fields fail) for the chart's oldest
   supported Kubernetes (Chart.yaml kubeVersion) and the newest one the package ships.
   Custom resources have no schema there: the kinds in CUSTOM_KINDS are checked by the
   assertions below instead, and any other kind without a schema fails.
3. Asserts what matters for running Ringtail: see the `check_*` functions.
4. Asserts that values which would break a node fail rendering (a grace period below the
   drain bound, fewer ingesters than the replication factor, unknown config fields, ...).
5. Mutation self-test (skip with --no-mutations): breaks a copy of the chart in each way
   an assertion guards against and requires that assertion to fail, so none of them can
   pass vacuously.

Prints one line per check and closes with "N passed, N failed"; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import math
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "ringtail"
CONFIG_RS = REPO / "src" / "config.rs"
RELEASE = "rt"
NAMESPACE = "tracing"
# Kubernetes versions to validate against: the chart's floor (Chart.yaml kubeVersion) and
# the newest schemas kubernetes-validate 1.37 ships.
KUBE_VERSIONS = ["1.30.0", "1.37.0"]
# Kinds that kubernetes-validate has no schema for (CRDs); the checks below look at them.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

# RawConfig fields that the chart writes itself (ConfigMap, environment, flags) and that
# values.schema.json therefore keeps out of `config`.
CHART_MANAGED_FIELDS = {
    "target", "node_name", "zone", "advertise_addr", "data_dir", "overrides_file",
    "http_listen", "grpc_listen", "otlp_grpc_listen", "otlp_http_listen",
    "gossip_listen", "gossip_join",
    "storage_backend", "storage_path",
    "s3_bucket", "s3_endpoint", "s3_region", "s3_access_key_id", "s3_secret_access_key",
    "s3_path_style", "admin_token", "cluster_secret", "otlp_tls_cert_file", "otlp_tls_key_file",
    "internal_tls_cert_file", "internal_tls_key_file", "internal_tls_ca_file", "internal_tls_server_name",
    "http_tls_cert_file", "http_tls_key_file", "http_tls_ca_file", "http_tls_server_name",
}
# RawConfig fields deliberately not offered by the chart.
NOT_EXPOSED_FIELDS = {"gossip_packet_loss"}  # fault injection for tests


class CheckFailed(Exception):
    pass


def ensure(condition: Any, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# --- rendering ---------------------------------------------------------------------------


@dataclass
class Rendered:
    """One rendering of the chart: its objects and the ringtail config file it carries."""

    name: str
    objects: list[dict[str, Any]]
    values: dict[str, Any]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, component: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if labels(o).get("app.kubernetes.io/component") == component]
        ensure(len(found) == 1, f"expected one {kind} for {component}, found {len(found)}")
        return found[0]

    def config(self) -> dict[str, Any]:
        maps = [o for o in self.of_kind("ConfigMap") if "ringtail.yaml" in o.get("data", {})]
        ensure(len(maps) == 1, f"expected one ConfigMap with ringtail.yaml, found {len(maps)}")
        parsed = yaml.safe_load(maps[0]["data"]["ringtail.yaml"])
        ensure(isinstance(parsed, dict), "ringtail.yaml is not a mapping")
        return parsed

    def workloads(self) -> list[dict[str, Any]]:
        return self.of_kind("StatefulSet") + self.of_kind("Deployment")


def labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj.get("metadata", {}).get("labels") or {}


def load_values(path: Path | None) -> dict[str, Any] | None:
    return None if path is None else helm.values_from_yaml(path.read_text())


def render(chart_dir: Path, values: dict[str, Any] | None, name: str) -> Rendered:
    with helm.Chart.load(chart_dir) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        merged = chart.merge_values(values)
    objects: list[dict[str, Any]] = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is None:
                continue
            if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                raise CheckFailed(f"{template}: rendered a document that is not a Kubernetes object")
            objects.append(doc)
    return Rendered(name, objects, merged)


def render_error(chart_dir: Path, values: dict[str, Any] | None) -> str | None:
    """The error message if rendering fails, else None."""
    try:
        render(chart_dir, values, "negative")
    except helm.HelmError as e:
        return str(e)
    return None


# --- the product side ----------------------------------------------------------------------


def raw_config_fields() -> set[str]:
    """The fields of `RawConfig` in src/config.rs (what a ringtail config file may hold)."""
    text = CONFIG_RS.read_text()
    match = re.search(r"pub struct RawConfig \{(.*?)\n\}", text, re.S)
    ensure(match, f"cannot find `pub struct RawConfig` in {CONFIG_RS}")
    fields = set(re.findall(r"^\s*pub (\w+):", match.group(1), re.M))
    ensure(len(fields) > 10, f"found only {sorted(fields)} in RawConfig: has its layout changed?")
    return fields


def port_of(listen: str) -> int:
    return int(listen.rsplit(":", 1)[1])


def drain_bound_seconds(config: dict[str, Any]) -> int:
    """What the node may take to shut down: shutdown_timeout_ms (default 60000) + 1 s."""
    return math.ceil(int(config.get("shutdown_timeout_ms", 60000)) / 1000) + 1


# --- checks on one rendering ----------------------------------------------------------------


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def main_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    ensure(len(containers) == 1, f"{workload['metadata']['name']}: expected one container")
    return containers[0]


def selects(selector: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels / matchExpressions, or a Service's plain
    map) selects pods with these labels."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return False  # an empty selector here is a bug, not "everything"
    for key, value in (selector.get("matchLabels") or {}).items():
        if pod_labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        present = expr["key"] in pod_labels
        value = pod_labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def template_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env") or []}


def effective_config(r: Rendered, workload: dict[str, Any]) -> dict[str, Any]:
    """What the node in this workload runs with: the config file, overlaid with the
    container's literal RINGTAIL_* environment and its --flags (ringtail's precedence:
    flag > environment > file). Values from the environment and flags stay strings."""
    config = dict(r.config())
    c = main_container(workload)
    for e in c.get("env") or []:
        if e["name"].startswith("RINGTAIL_") and "value" in e and e["name"] != "RINGTAIL_CONFIG":
            config[e["name"][len("RINGTAIL_"):].lower()] = e["value"]
    for arg in c.get("args") or []:
        if arg.startswith("--") and "=" in arg and not arg.startswith("--config="):
            name, value = arg[2:].split("=", 1)
            config[name.replace("-", "_")] = value
    return config


def image_env_names() -> dict[str, set[str]]:
    """RINGTAIL_* variables that the repository's Dockerfiles set with ENV, by file."""
    found: dict[str, set[str]] = {}
    for dockerfile in sorted(REPO.glob("Dockerfile*")):
        text = re.sub(r"\\\n", " ", dockerfile.read_text())
        names = set()
        for line in text.splitlines():
            if re.match(r"\s*ENV\s", line):
                names |= set(re.findall(r"\b(RINGTAIL_\w+)[= ]", line))
        found[dockerfile.name] = names
    return found


def check_kubernetes_schemas(r: Rendered) -> None:
    """Every object validates against Kubernetes' strict schemas (CRDs: see CUSTOM_KINDS)."""
    for obj in r.objects:
        what = f"{obj['kind']}/{obj.get('metadata', {}).get('name')}"
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                raise CheckFailed(f"{what} is invalid for Kubernetes {version}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                raise CheckFailed(f"{what}: {e.message}; add it to CUSTOM_KINDS with checks of its own")


def check_config_fields(r: Rendered) -> None:
    """ringtail.yaml, RINGTAIL_* env and --flags name only RawConfig fields.

    ringtail rejects unknown fields in the file; an unknown variable or flag is ignored or
    refused, a silent or loud misconfiguration either way.
    """
    fields = raw_config_fields()
    unknown = set(r.config()) - fields
    ensure(not unknown, f"ringtail.yaml sets fields that src/config.rs RawConfig lacks: {sorted(unknown)}")
    for w in r.workloads():
        c = main_container(w)
        env = {e["name"][len("RINGTAIL_"):].lower() for e in c.get("env") or []
               if e["name"].startswith("RINGTAIL_") and e["name"] != "RINGTAIL_CONFIG"}
        flags = {a[2:].split("=", 1)[0].replace("-", "_") for a in c.get("args") or [] if a.startswith("--")}
        unknown = (env | flags) - fields - {"config"}
        ensure(not unknown, f"{w['metadata']['name']} sets RINGTAIL_* variables or flags ringtail lacks: {sorted(unknown)}")


def check_image_env_overridden(r: Rendered) -> None:
    """The RINGTAIL_* ENV of the repo's Dockerfiles is overridden by the chart's values.

    The environment beats the config file, so an image ENV (RINGTAIL_DATA_DIR,
    RINGTAIL_STORAGE_PATH) would silently win over the ConfigMap: each must be set in the
    container's env to the same value as the config file says.
    """
    config = r.config()
    for dockerfile, names in image_env_names().items():
        for w in r.workloads():
            env = env_of(main_container(w))
            for name in names:
                field_name = name[len("RINGTAIL_"):].lower()
                if field_name == "storage_path" and config.get("storage_backend") != "filesystem":
                    continue  # unused with s3
                ensure(name in env, f"{w['metadata']['name']} leaves {dockerfile}'s ENV {name} in force")
                if field_name in config:
                    ensure(str(config[field_name]) == env[name].get("value"),
                           f"{w['metadata']['name']}: {name}={env[name].get('value')} but the config file says {config[field_name]}")


def check_ingester_statefulset(r: Rendered) -> None:
    """Ingester StatefulSet: --target ingester, a WAL PVC at data_dir, pod name, pod IP.

    One volumeClaimTemplate per pod mounted at data_dir, RINGTAIL_NODE_NAME = the pod name
    (stable ring tokens), RINGTAIL_ADVERTISE_ADDR = the pod IP, OrderedReady.
    """
    sts = r.one("StatefulSet", "ingester")
    c = main_container(sts)
    ensure("--target=ingester" in c.get("args", []), f"ingester args lack --target=ingester: {c.get('args')}")
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates") or []}
    ensure(claims, "the ingester StatefulSet has no volumeClaimTemplates")
    data_dir = effective_config(r, sts).get("data_dir")
    ensure(data_dir, "the ingesters get no data_dir")
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
    ensure(mounts.get(data_dir) in claims, f"data_dir {data_dir} is not mounted from a volumeClaimTemplate ({mounts})")
    env = env_of(c)
    ensure(env.get("RINGTAIL_NODE_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
           "RINGTAIL_NODE_NAME is not the pod name (metadata.name)")
    ensure(env.get("RINGTAIL_ADVERTISE_ADDR", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP",
           "RINGTAIL_ADVERTISE_ADDR is not the pod IP (status.podIP)")
    ensure(sts["spec"].get("podManagementPolicy", "OrderedReady") == "OrderedReady",
           "ingester podManagementPolicy is not OrderedReady: a scale-down would stop several ingesters at once")


def check_ingester_prestop(r: Rendered) -> None:
    """Ingester preStop hook that needs no shell (exec of ringtail, or httpGet).

    An exec must run the ringtail binary and address the node's own HTTP port.
    """
    sts = r.one("StatefulSet", "ingester")
    pre_stop = main_container(sts).get("lifecycle", {}).get("preStop")
    ensure(pre_stop, "the ingester container has no preStop hook")
    http_port = port_of(r.config()["http_listen"])
    if "exec" in pre_stop:
        command = pre_stop["exec"]["command"]
        ensure(command[0] == r.values["image"]["binary"],
               f"preStop runs {command[0]!r}, not the ringtail binary (the image has no shell)")
        ensure(any(f":{http_port}" in arg for arg in command[1:]),
               f"preStop {command} does not address the HTTP port {http_port}")
    else:
        ensure("httpGet" in pre_stop, f"preStop is neither exec nor httpGet: {pre_stop}")


def check_grace_periods(r: Rendered) -> None:
    """terminationGracePeriodSeconds >= shutdown_timeout_ms/1000 + 1 s (+ preStop sleep).

    shutdown_timeout_ms comes from the rendered config file; every workload is checked.
    """
    bound = drain_bound_seconds(r.config())
    for w in r.workloads():
        spec = pod_spec(w)
        grace = spec.get("terminationGracePeriodSeconds", 30)
        sleep = main_container(w).get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        ensure(grace >= bound + sleep,
               f"{w['metadata']['name']}: terminationGracePeriodSeconds {grace} < drain bound {bound} s + preStop sleep {sleep} s")


def check_ingester_pdb(r: Rendered) -> None:
    """A PodDisruptionBudget with maxUnavailable 1 selects the ingester pods."""
    sts = r.one("StatefulSet", "ingester")
    pod_labels = template_labels(sts)
    pdbs = [p for p in r.of_kind("PodDisruptionBudget") if selects(p["spec"]["selector"], pod_labels)]
    ensure(len(pdbs) == 1, f"expected one PodDisruptionBudget selecting the ingesters, found {len(pdbs)}")
    ensure(pdbs[0]["spec"].get("maxUnavailable") == 1,
           f"the ingester PDB allows {pdbs[0]['spec']} (want maxUnavailable: 1)")
    others = [w for w in r.of_kind("Deployment") if selects(pdbs[0]["spec"]["selector"], template_labels(w))]
    ensure(not others, "the ingester PDB also selects non-ingester pods")


def check_no_ingester_autoscaling(r: Rendered) -> None:
    """No HorizontalPodAutoscaler targets a StatefulSet or the ingesters."""
    sts_names = {s["metadata"]["name"] for s in r.of_kind("StatefulSet")}
    for hpa in r.of_kind("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        ensure(target["kind"] != "StatefulSet" and target["name"] not in sts_names,
               f"HPA {hpa['metadata']['name']} targets {target['kind']}/{target['name']}: ingesters must not be autoscaled")
        ensure(target["kind"] == "Deployment" and target["name"] == r.one("Deployment", "distributor")["metadata"]["name"],
               f"HPA {hpa['metadata']['name']} targets {target}, not the distributor Deployment")


def check_gossip_service(r: Rendered) -> None:
    """Gossip: a headless Service with publishNotReadyAddresses, named by gossip_join.

    It selects every workload's pods on the UDP gossip port.
    """
    config = r.config()
    gossip_port = port_of(config["gossip_listen"])
    services = [s for s in r.of_kind("Service") if any(p.get("protocol") == "UDP" for p in s["spec"].get("ports", []))]
    ensure(len(services) == 1, f"expected one Service with a UDP port (gossip), found {len(services)}")
    svc = services[0]
    ensure(svc["spec"].get("clusterIP") == "None", "the gossip Service is not headless (clusterIP: None)")
    ensure(svc["spec"].get("publishNotReadyAddresses") is True,
           "the gossip Service does not publish not-ready addresses: starting nodes could not find their peers")
    ports = [p for p in svc["spec"]["ports"] if p.get("protocol") == "UDP"]
    ensure(ports[0]["port"] == gossip_port, f"gossip Service port {ports[0]['port']} != gossip_listen port {gossip_port}")
    for w in r.workloads():
        ensure(selects(svc["spec"]["selector"], template_labels(w)),
               f"the gossip Service does not select the pods of {w['metadata']['name']}")
        container_ports = {p["name"]: p for p in main_container(w).get("ports", [])}
        target = ports[0].get("targetPort", ports[0]["port"])
        ok = (container_ports.get(target, {}).get("containerPort") == gossip_port) if isinstance(target, str) else target == gossip_port
        ensure(ok and container_ports.get(target if isinstance(target, str) else "gossip", {}).get("protocol") == "UDP",
               f"{w['metadata']['name']} exposes no UDP gossip port {gossip_port} for the Service")
    want = f"{svc['metadata']['name']}.{NAMESPACE}.svc.{r.values['clusterDomain']}:{gossip_port}"
    ensure(config.get("gossip_join") == [want], f"gossip_join is {config.get('gossip_join')}, want [{want!r}]")


def check_readiness_probes(r: Rendered) -> None:
    """Every workload is ready on GET /ready at the HTTP port, in the scheme the port speaks."""
    http_port = port_of(r.config()["http_listen"])
    scheme = "HTTPS" if r.values["httpTls"]["secretName"] else "HTTP"
    for w in r.workloads():
        c = main_container(w)
        probe = c.get("readinessProbe", {}).get("httpGet")
        ensure(probe, f"{w['metadata']['name']} has no httpGet readiness probe")
        for kind in ("readinessProbe", "livenessProbe"):
            got = c.get(kind, {}).get("httpGet", {}).get("scheme", "HTTP")
            ensure(got == scheme, f"{w['metadata']['name']} {kind} uses {got}, the port speaks {scheme}")
        ensure(probe.get("path") == "/ready", f"{w['metadata']['name']} readiness path is {probe.get('path')}, not /ready")
        port = probe.get("port")
        named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        ensure(named.get(port, port) == http_port, f"{w['metadata']['name']} readiness port {port} is not the HTTP port {http_port}")


def check_front_services(r: Rendered) -> None:
    """Distributors and queriers run their role and are reachable on the real ports."""
    config = r.config()
    want = {
        "distributor": {port_of(config["otlp_grpc_listen"]), port_of(config["otlp_http_listen"])},
        "querier": {port_of(config["http_listen"])},
    }
    for component, ports in want.items():
        dep = r.one("Deployment", component)
        c = main_container(dep)
        ensure(f"--target={component}" in c.get("args", []), f"{component} args lack --target={component}")
        named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        svcs = [s for s in r.of_kind("Service") if s["spec"].get("clusterIP") != "None"
                and selects(s["spec"]["selector"], template_labels(dep))]
        ensure(len(svcs) == 1, f"expected one Service for the {component}s, found {len(svcs)}")
        reachable = set()
        for p in svcs[0]["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            container_port = named.get(target) if isinstance(target, str) else target
            if container_port == p["port"]:
                reachable.add(container_port)
        ensure(ports <= reachable, f"the {component} Service does not reach ports {sorted(ports - reachable)}")


def check_compactor(r: Rendered) -> None:
    """The store is kept by compactors alone: one Deployment runs --target=compactor."""
    dep = r.one("Deployment", "compactor")
    ensure("--target=compactor" in main_container(dep).get("args", []), "the compactor Deployment lacks --target=compactor")
    ensure(dep["spec"].get("replicas") == r.values["compactor"]["replicas"],
           f"compactor replicas {dep['spec'].get('replicas')} != values {r.values['compactor']['replicas']}")
    for w in r.workloads():
        if w is dep:
            continue
        targets = [a for a in main_container(w).get("args", []) if a.startswith("--target=")]
        ensure(all("compactor" not in t and "all" not in t for t in targets),
               f"{w['metadata']['name']} also runs the compactor ({targets}): merges and retention belong to the compactor Deployment")


def check_security(r: Rendered) -> None:
    """Pods run as non-root with a read-only root filesystem and resources set."""
    for w in r.workloads():
        name = w["metadata"]["name"]
        ensure(pod_spec(w).get("securityContext", {}).get("runAsNonRoot") is True, f"{name}: runAsNonRoot is not true")
        c = main_container(w)
        sc = c.get("securityContext", {})
        ensure(sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False,
               f"{name}: container securityContext is not locked down: {sc}")
        ensure(c.get("resources", {}).get("requests"), f"{name}: no resource requests")


def ingester_anti_affinity(r: Rendered, key: str) -> None:
    anti = pod_spec(r.one("StatefulSet", "ingester")).get("affinity", {}).get("podAntiAffinity", {})
    ensure(anti.get(key), f"ingester podAntiAffinity lacks {key}: {anti}")


def check_ingester_soft_anti_affinity(r: Rendered) -> None:
    """Ingesters prefer one per node (podAntiAffinity preferred, the default)."""
    ingester_anti_affinity(r, "preferredDuringSchedulingIgnoredDuringExecution")


def check_ingester_hard_anti_affinity(r: Rendered) -> None:
    """Ingesters require one per node (podAntiAffinity: hard)."""
    ingester_anti_affinity(r, "requiredDuringSchedulingIgnoredDuringExecution")


def check_filesystem_storage(r: Rendered) -> None:
    """Filesystem store: one ReadWriteMany claim mounted by every pod at storage_path."""
    ensure(r.config().get("storage_backend") == "filesystem", f"storage_backend is {r.config().get('storage_backend')}")
    claims = {c["metadata"]["name"]: c for c in r.of_kind("PersistentVolumeClaim")}
    for w in r.workloads():
        path = effective_config(r, w).get("storage_path")
        mounts = {m["mountPath"]: m["name"] for m in main_container(w).get("volumeMounts", [])}
        ensure(path in mounts, f"{w['metadata']['name']} does not mount storage_path {path}")
        volumes = {v["name"]: v for v in pod_spec(w).get("volumes", [])}
        claim = volumes[mounts[path]].get("persistentVolumeClaim", {}).get("claimName")
        ensure(claim in claims, f"{w['metadata']['name']}: storage_path is not on the chart's claim")
        ensure("ReadWriteMany" in claims[claim]["spec"]["accessModes"], "the blocks claim is not ReadWriteMany")


def check_s3_storage(r: Rendered) -> None:
    """S3 values: the config says s3 and the Secret's keys reach every pod's env.

    RINGTAIL_S3_ACCESS_KEY_ID / RINGTAIL_S3_SECRET_ACCESS_KEY from storage.s3.existingSecret;
    no credentials in the ConfigMap.
    """
    config = r.config()
    s3 = r.values["storage"]["s3"]
    ensure(config.get("storage_backend") == "s3", f"storage_backend is {config.get('storage_backend')}, not s3")
    ensure(config.get("s3_bucket") == s3["bucket"], f"s3_bucket is {config.get('s3_bucket')}")
    ensure(config.get("s3_endpoint") == s3["endpoint"] and config.get("s3_path_style") is s3["pathStyle"],
           "s3_endpoint / s3_path_style do not follow the values")
    ensure("storage_path" not in config, "storage_path is set with s3")
    ensure(not any(k in config for k in ("s3_access_key_id", "s3_secret_access_key")),
           "S3 credentials are in the ConfigMap")
    for w in r.workloads():
        env = env_of(main_container(w))
        for var, key in (("RINGTAIL_S3_ACCESS_KEY_ID", s3["accessKeyIdKey"]),
                         ("RINGTAIL_S3_SECRET_ACCESS_KEY", s3["secretAccessKeyKey"])):
            ref = env.get(var, {}).get("valueFrom", {}).get("secretKeyRef", {})
            ensure(ref.get("name") == s3["existingSecret"] and ref.get("key") == key,
                   f"{w['metadata']['name']}: {var} is not wired to secret {s3['existingSecret']}/{key}: {ref}")
        ensure(not any(v.get("persistentVolumeClaim") for v in pod_spec(w).get("volumes", [])),
               f"{w['metadata']['name']} mounts a shared claim with s3")


def check_cluster_secret(r: Rendered) -> None:
    """Every pod gets the same cluster secret from a Secret, never from the ConfigMap.

    With no existingSecret the chart renders that Secret itself: a non-empty random value,
    kept on uninstall (so a reinstall over live ingesters still matches them).
    """
    cs = r.values["clusterSecret"]
    refs = set()
    for w in r.workloads():
        ref = env_of(main_container(w)).get("RINGTAIL_CLUSTER_SECRET", {}).get("valueFrom", {}).get("secretKeyRef", {})
        ensure(ref.get("key") == cs["key"], f"{w['metadata']['name']}: RINGTAIL_CLUSTER_SECRET is not from a Secret: {ref}")
        refs.add(ref.get("name"))
    ensure(len(refs) == 1, f"the workloads use different cluster secrets: {sorted(refs)}")
    ensure("cluster_secret" not in r.config(), "the cluster secret is in the ConfigMap")
    name = refs.pop()
    if cs["existingSecret"]:
        ensure(name == cs["existingSecret"], f"RINGTAIL_CLUSTER_SECRET is from {name}, not {cs['existingSecret']}")
        ensure(not any(s["metadata"]["name"] == name for s in r.of_kind("Secret")), "the chart renders the user's Secret")
        return
    secrets = [s for s in r.of_kind("Secret") if s["metadata"]["name"] == name]
    ensure(len(secrets) == 1, f"no Secret {name} is rendered")
    value = base64.b64decode(secrets[0].get("data", {}).get(cs["key"], ""))
    ensure(len(value) >= 16, f"the generated cluster secret is {len(value)} bytes")
    ensure(secrets[0]["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep",
           "the generated cluster secret is not kept on uninstall")


def check_otlp_tls(r: Rendered) -> None:
    """With otlpTls.secretName, distributors mount that Secret as a folder and point ringtail at it.

    A folder mount (no subPath), so a renewed certificate reaches the pod; ingesters and queriers
    serve no OTLP and get neither.
    """
    tls = r.values["otlpTls"]
    for w in r.workloads():
        c = main_container(w)
        env = env_of(c)
        is_distributor = labels(w).get("app.kubernetes.io/component") == "distributor"
        mounts = [m for m in c.get("volumeMounts") or [] if m["name"] == "otlp-tls"]
        volumes = [v for v in pod_spec(w).get("volumes") or [] if v["name"] == "otlp-tls"]
        if not is_distributor:
            ensure(not mounts and "RINGTAIL_OTLP_TLS_CERT_FILE" not in env, f"{w['metadata']['name']} gets the OTLP certificate")
            continue
        ensure(len(mounts) == 1 and "subPath" not in mounts[0], f"distributor mounts: {mounts}")
        ensure(volumes and volumes[0].get("secret", {}).get("secretName") == tls["secretName"], f"distributor volumes: {volumes}")
        folder = mounts[0]["mountPath"]
        for var, key in (("RINGTAIL_OTLP_TLS_CERT_FILE", tls["certKey"]), ("RINGTAIL_OTLP_TLS_KEY_FILE", tls["keyKey"])):
            ensure(env.get(var, {}).get("value") == f"{folder}/{key}", f"{var} is {env.get(var)}")


def check_internal_tls(r: Rendered) -> None:
    """With internalTls.secretName, every pod mounts that Secret as a folder and points ringtail at it."""
    tls = r.values["internalTls"]
    for w in r.workloads():
        c = main_container(w)
        env = env_of(c)
        mounts = [m for m in c.get("volumeMounts") or [] if m["name"] == "internal-tls"]
        volumes = [v for v in pod_spec(w).get("volumes") or [] if v["name"] == "internal-tls"]
        ensure(len(mounts) == 1 and "subPath" not in mounts[0], f"{w['metadata']['name']} mounts: {mounts}")
        ensure(volumes and volumes[0].get("secret", {}).get("secretName") == tls["secretName"],
               f"{w['metadata']['name']} volumes: {volumes}")
        folder = mounts[0]["mountPath"]
        for var, key in (("RINGTAIL_INTERNAL_TLS_CERT_FILE", tls["certKey"]), ("RINGTAIL_INTERNAL_TLS_KEY_FILE", tls["keyKey"]),
                         ("RINGTAIL_INTERNAL_TLS_CA_FILE", tls["caKey"])):
            ensure(env.get(var, {}).get("value") == f"{folder}/{key}", f"{w['metadata']['name']}: {var} is {env.get(var)}")
        ensure(env.get("RINGTAIL_INTERNAL_TLS_SERVER_NAME", {}).get("value") == tls["serverName"], "server name not set")


def check_http_tls(r: Rendered) -> None:
    """With httpTls.secretName, every pod serves HTTPS, checks peers by name, and is probed and scraped over HTTPS."""
    tls = r.values["httpTls"]
    name = tls["serverName"] or f"{r.one('Service', 'querier')['metadata']['name']}.{NAMESPACE}.svc"
    for w in r.workloads():
        c = main_container(w)
        env = env_of(c)
        mounts = [m for m in c.get("volumeMounts") or [] if m["name"] == "http-tls"]
        volumes = [v for v in pod_spec(w).get("volumes") or [] if v["name"] == "http-tls"]
        ensure(len(mounts) == 1 and "subPath" not in mounts[0], f"{w['metadata']['name']} mounts: {mounts}")
        ensure(volumes and volumes[0].get("secret", {}).get("secretName") == tls["secretName"],
               f"{w['metadata']['name']} volumes: {volumes}")
        folder = mounts[0]["mountPath"]
        for var, key in (("RINGTAIL_HTTP_TLS_CERT_FILE", tls["certKey"]), ("RINGTAIL_HTTP_TLS_KEY_FILE", tls["keyKey"]),
                         ("RINGTAIL_HTTP_TLS_CA_FILE", tls["caKey"])):
            ensure(env.get(var, {}).get("value") == f"{folder}/{key}", f"{w['metadata']['name']}: {var} is {env.get(var)}")
        ensure(env.get("RINGTAIL_HTTP_TLS_SERVER_NAME", {}).get("value") == name,
               f"{w['metadata']['name']}: server name is {env.get('RINGTAIL_HTTP_TLS_SERVER_NAME')}, want {name}")
        command = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        ensure(not any(a.startswith("--url=http://") for a in command), f"{w['metadata']['name']} preStop calls plain HTTP: {command}")
    for monitor in r.of_kind("ServiceMonitor"):
        for e in monitor["spec"]["endpoints"]:
            ensure(e.get("scheme") == "https", f"the ServiceMonitor scrapes with {e.get('scheme', 'http')}")
            tls_config = e.get("tlsConfig", {})
            ensure(tls_config.get("serverName") == name, f"the ServiceMonitor checks {tls_config.get('serverName')}")
            ensure(tls_config.get("ca", {}).get("secret") == {"name": tls["secretName"], "key": tls["caKey"]},
                   f"the ServiceMonitor trusts {tls_config.get('ca')}")


def check_zone_spread(r: Rendered) -> None:
    """Zone awareness: ingesters spread over topology.kubernetes.io/zone."""
    sts = r.one("StatefulSet", "ingester")
    spread = [c for c in pod_spec(sts).get("topologySpreadConstraints") or []
              if c.get("topologyKey") == "topology.kubernetes.io/zone"]
    ensure(spread, "the ingesters have no topologySpreadConstraint over topology.kubernetes.io/zone")
    ensure(selects(spread[0]["labelSelector"], template_labels(sts)), "the zone spread does not select the ingesters")
    if r.values["ingester"]["zoneAwareness"].get("zoneFromNodeLabel"):
        ref = env_of(main_container(sts)).get("RINGTAIL_ZONE", {}).get("valueFrom", {}).get("fieldRef", {})
        ensure(ref.get("fieldPath") == "metadata.labels['topology.kubernetes.io/zone']",
               f"zoneFromNodeLabel: RINGTAIL_ZONE is not the pod's zone label: {ref}")
    for w in r.of_kind("Deployment"):
        ensure("RINGTAIL_ZONE" not in env_of(main_container(w)), f"{w['metadata']['name']} gets a zone")


def check_zone_statefulsets(r: Rendered) -> None:
    """ingester.zones: one ingester StatefulSet per zone whose pods gossip that zone.

    RINGTAIL_ZONE = the zone's name, the zone's nodeSelector merged over the ingesters',
    its replicas (default ingester.replicas), and selectors that no other zone's pods match.
    """
    zones = r.values["ingester"]["zones"]
    sets = {s["metadata"]["name"]: s for s in r.of_kind("StatefulSet")}
    ensure(len(sets) == len(zones), f"{len(zones)} zones but StatefulSets {sorted(sets)}")
    for zone in zones:
        name = f"{RELEASE}-ringtail-ingester-{zone['name']}"
        ensure(name in sets, f"no StatefulSet {name}: {sorted(sets)}")
        sts = sets[name]
        env = env_of(main_container(sts))
        ensure(env.get("RINGTAIL_ZONE", {}).get("value") == zone["name"],
               f"{name}: RINGTAIL_ZONE is {env.get('RINGTAIL_ZONE')}")
        want = {**r.values["ingester"]["nodeSelector"], **zone.get("nodeSelector", {})}
        ensure(pod_spec(sts).get("nodeSelector") == want, f"{name}: nodeSelector {pod_spec(sts).get('nodeSelector')}, want {want}")
        replicas = zone.get("replicas", r.values["ingester"]["replicas"])
        ensure(sts["spec"]["replicas"] == replicas, f"{name}: {sts['spec']['replicas']} replicas, want {replicas}")
        for other in sets.values():
            if other is not sts:
                ensure(not selects(sts["spec"]["selector"], template_labels(other)),
                       f"{name}'s selector matches {other['metadata']['name']}'s pods")
        ensure(effective_config(r, sts).get("zone") == zone["name"], f"{name} does not run in its zone")


def check_zone_pdbs(r: Rendered) -> None:
    """ingester.zones: one PodDisruptionBudget per zone (maxUnavailable 1) over that zone's pods only."""
    pdbs = r.of_kind("PodDisruptionBudget")
    for sts in r.of_kind("StatefulSet"):
        mine = [p for p in pdbs if selects(p["spec"]["selector"], template_labels(sts))]
        ensure(len(mine) == 1, f"{sts['metadata']['name']}: {len(mine)} PodDisruptionBudgets select its pods")
        ensure(mine[0]["spec"].get("maxUnavailable") == 1, f"{sts['metadata']['name']}: {mine[0]['spec']}")


def check_overrides_file(r: Rendered) -> None:
    """overrides: a ConfigMap of their own, mounted as a folder at overrides_file on every pod.

    Outside the config ConfigMap (whose checksum restarts pods), holding {overrides: values}.
    """
    path = r.config().get("overrides_file")
    ensure(path, "the config has no overrides_file")
    maps = [m for m in r.of_kind("ConfigMap") if "overrides.yaml" in m.get("data", {})]
    ensure(len(maps) == 1 and "ringtail.yaml" not in maps[0]["data"], f"overrides ConfigMaps: {len(maps)}")
    parsed = yaml.safe_load(maps[0]["data"]["overrides.yaml"])
    ensure(parsed == {"overrides": r.values["overrides"]}, f"overrides.yaml is {parsed}")
    folder, file = path.rsplit("/", 1)
    ensure(file == "overrides.yaml", f"overrides_file {path} is not the ConfigMap's key")
    for w in r.workloads():
        mounts = [m for m in main_container(w).get("volumeMounts") or [] if m["mountPath"] == folder]
        ensure(len(mounts) == 1 and "subPath" not in mounts[0], f"{w['metadata']['name']} mounts at {folder}: {mounts}")
        volumes = {v["name"]: v for v in pod_spec(w).get("volumes") or []}
        source = volumes.get(mounts[0]["name"], {}).get("configMap", {}).get("name")
        ensure(source == maps[0]["metadata"]["name"], f"{w['metadata']['name']} mounts {source} at {folder}")


def check_service_monitor(r: Rendered) -> None:
    """ServiceMonitor (CRD, not schema-checked) scrapes /metrics of every workload once."""
    monitors = r.of_kind("ServiceMonitor")
    ensure(len(monitors) == 1, f"expected one ServiceMonitor, found {len(monitors)}")
    spec = monitors[0]["spec"]
    ensure(spec["endpoints"] and all(e.get("path") == "/metrics" for e in spec["endpoints"]), "endpoints do not scrape /metrics")
    port = spec["endpoints"][0]["port"]
    scraped = [s for s in r.of_kind("Service") if selects(spec["selector"], labels(s))]
    for w in r.workloads():
        hits = [s for s in scraped if selects(s["spec"]["selector"], template_labels(w))
                and any(p["name"] == port for p in s["spec"]["ports"])]
        ensure(len(hits) == 1, f"{w['metadata']['name']} is scraped through {len(hits)} Services (want 1)")


def check_values_schema_matches_raw_config(chart_dir: Path) -> None:
    """values.schema.json `config` + chart-managed fields = src/config.rs RawConfig.

    A field added to or removed from RawConfig shows up here.
    """
    schema = json.loads((chart_dir / "values.schema.json").read_text())
    offered = set(schema["properties"]["config"]["properties"])
    raw = raw_config_fields()
    ensure(not offered & CHART_MANAGED_FIELDS, f"config offers chart-managed fields {sorted(offered & CHART_MANAGED_FIELDS)}")
    missing = raw - offered - CHART_MANAGED_FIELDS - NOT_EXPOSED_FIELDS
    stale = (offered | CHART_MANAGED_FIELDS | NOT_EXPOSED_FIELDS) - raw
    ensure(not missing, f"RawConfig fields neither in values.schema.json `config` nor handled by the chart: {sorted(missing)}")
    ensure(not stale, f"the chart knows fields that RawConfig no longer has: {sorted(stale)}")


# --- negative renderings -------------------------------------------------------------------

NEGATIVE_CASES: list[tuple[str, dict[str, Any] | None, str]] = [
    ("a grace period below the drain bound fails (tests/helm/values-too-short-grace.yaml)",
     load_values(Path(__file__).with_name("values-too-short-grace.yaml")), "below the drain bound"),
    ("a grace period of exactly shutdown_timeout_ms fails (the node takes up to 1 s more)",
     {"config": {"shutdown_timeout_ms": 120000}, "ingester": {"terminationGracePeriodSeconds": 120}}, "below the drain bound"),
    ("a distributor grace period without room for its preStop sleep fails",
     {"distributor": {"terminationGracePeriodSeconds": 61}}, "below the drain bound"),
    ("RINGTAIL_SHUTDOWN_TIMEOUT_MS in extraEnv fails (it would bypass the derived grace)",
     {"ingester": {"extraEnv": [{"name": "RINGTAIL_SHUTDOWN_TIMEOUT_MS", "value": "600000"}]}}, "RINGTAIL_SHUTDOWN_TIMEOUT_MS"),
    ("fewer ingesters than the replication factor fails",
     {"ingester": {"replicas": 2}}, "below config.replication_factor"),
    ("fewer ingesters in all zones than the replication factor fails",
     {"ingester": {"replicas": 1, "zones": [{"name": "a"}, {"name": "b"}]}}, "below config.replication_factor"),
    ("no distributor and no querier fails (ingester-0 could never join anyone)",
     {"distributor": {"replicas": 0}, "querier": {"replicas": 0}}, "both 0"),
    ("an unknown config field fails (ringtail would refuse to start)",
     {"config": {"replication_factr": 3}}, "replication_factr"),
    ("a chart-managed field under config fails",
     {"config": {"node_name": "fixed"}}, "node_name"),
    ("autoscaling values for ingesters fail",
     {"ingester": {"autoscaling": {"enabled": True}}}, "autoscaling"),
    ("s3 without a bucket fails",
     {"storage": {"backend": "s3"}}, "bucket"),
    ("shutdown_timeout_ms below ringtail's 5000 ms minimum fails",
     {"config": {"shutdown_timeout_ms": 1000}}, "shutdown_timeout_ms"),
]


def check_negative(chart_dir: Path, values: dict[str, Any] | None, expect: str) -> None:
    error = render_error(chart_dir, values)
    ensure(error is not None, f"rendering with {values} succeeded")
    ensure(expect in error, f"rendering failed, but not for {expect!r}: {error}")


# --- running -------------------------------------------------------------------------------


@dataclass
class Report:
    passed: int = 0
    failed: list[str] = field(default_factory=list)

    def run(self, name: str, fn: Callable[[], None]) -> bool:
        try:
            fn()
        except (CheckFailed, helm.HelmError, KeyError, IndexError, TypeError) as e:
            self.failed.append(name)
            print(f"FAIL  {name}\n      {type(e).__name__}: {e}")
            return False
        self.passed += 1
        print(f"ok    {name}")
        return True


def lint(chart_dir: Path, values_file: Path | None) -> None:
    report = helm.lint(chart_dir, load_values(values_file), strict=True, namespace=NAMESPACE,
                       kube_version="v" + KUBE_VERSIONS[0])
    problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
    ensure(not problems, f"helm lint: {problems}")


def default_checks(r: Rendered) -> list[Callable[[Rendered], None]]:
    return [check_kubernetes_schemas, check_config_fields, check_image_env_overridden, check_ingester_statefulset,
            check_ingester_prestop, check_grace_periods, check_ingester_pdb, check_no_ingester_autoscaling,
            check_gossip_service, check_readiness_probes, check_front_services, check_security,
            check_ingester_soft_anti_affinity, check_filesystem_storage, check_cluster_secret, check_compactor]


def s3_zone_checks(r: Rendered) -> list[Callable[[Rendered], None]]:
    return [check_kubernetes_schemas, check_config_fields, check_image_env_overridden, check_ingester_statefulset,
            check_ingester_prestop, check_grace_periods, check_ingester_pdb, check_no_ingester_autoscaling,
            check_gossip_service,
            check_readiness_probes, check_front_services, check_security,
            check_ingester_hard_anti_affinity, check_s3_storage, check_zone_spread,
            check_service_monitor, check_cluster_secret, check_otlp_tls, check_internal_tls, check_http_tls,
            check_compactor]


def zone_checks(r: Rendered) -> list[Callable[[Rendered], None]]:
    return [check_kubernetes_schemas, check_config_fields, check_image_env_overridden, check_grace_periods,
            check_no_ingester_autoscaling, check_gossip_service, check_readiness_probes, check_security,
            check_zone_statefulsets, check_zone_pdbs, check_overrides_file]


S3_ZONES = "ci/s3-zones-values.yaml"
ZONES = "ci/zones-values.yaml"


def run_all(chart_dir: Path, report: Report, prefix: str = "") -> None:
    """Every check on the chart at chart_dir."""
    for values_file in [None, *sorted((chart_dir / "ci").glob("*.yaml"))]:
        label = values_file.name if values_file else "default values"
        report.run(f"{prefix}helm lint ({label})", lambda: lint(chart_dir, values_file))
    report.run(f"{prefix}values.schema.json `config` + chart-managed fields = RawConfig fields",
               lambda: check_values_schema_matches_raw_config(chart_dir))
    for label, values_file, checks in (("default", None, default_checks), ("s3-zones", chart_dir / S3_ZONES, s3_zone_checks),
                                       ("zones", chart_dir / ZONES, zone_checks)):
        rendered: list[Rendered] = []
        if not report.run(f"{prefix}[{label}] render", lambda: rendered.append(render(chart_dir, load_values(values_file), label))):
            continue
        r = rendered[0]
        for check in checks(r):
            doc = (check.__doc__ or check.__name__).strip().splitlines()[0]
            report.run(f"{prefix}[{label}] {doc}", lambda check=check: check(r))
    for name, values, expect in NEGATIVE_CASES:
        report.run(f"{prefix}[negative] {name}", lambda v=values, e=expect: check_negative(chart_dir, v, e))


# Mutations: (what the broken chart does, file, old text, new text, a check that must fail).
MUTATIONS: list[tuple[str, str, str, str, str]] = [
    ("no ingester PDB", "templates/pdb.yaml", "kind: PodDisruptionBudget", "kind: PodDisruptionBudgetX",
     "PodDisruptionBudget"),
    ("ingester PDB maxUnavailable 2", "templates/pdb.yaml", "spec:\n  maxUnavailable: 1", "spec:\n  maxUnavailable: 2",
     "PodDisruptionBudget"),
    ("no preStop", "values.yaml", "  preStop:\n    enabled: true", "  preStop:\n    enabled: false", "preStop hook"),
    ("grace below the drain bound", "templates/_helpers.tpl", "{{- $minimum := add $drain 1 $sleep }}",
     "{{- $minimum := 1 }}{{- $drain = sub $drain 50 }}", "terminationGracePeriodSeconds >="),
    ("grace check in templates removed", "templates/_helpers.tpl", "{{- else if lt (int64 $values.terminationGracePeriodSeconds) $minimum }}",
     "{{- else if false }}", "grace period below the drain bound fails"),
    ("gossip Service not headless", "templates/services.yaml", "  clusterIP: None\n  publishNotReadyAddresses: true\n  selector:\n    {{- include \"ringtail.selectorLabels\"",
     "  publishNotReadyAddresses: true\n  selector:\n    {{- include \"ringtail.selectorLabels\"", "headless Service"),
    ("gossip Service hides not-ready pods", "templates/services.yaml", "  publishNotReadyAddresses: true\n  selector:\n    {{- include \"ringtail.selectorLabels\"",
     "  publishNotReadyAddresses: false\n  selector:\n    {{- include \"ringtail.selectorLabels\"", "headless Service"),
    ("HPA on the ingesters", "templates/distributor-hpa.yaml", "    kind: Deployment\n    name: {{ include \"ringtail.fullname\" . }}-distributor",
     "    kind: StatefulSet\n    name: {{ include \"ringtail.fullname\" . }}-ingester", "No HorizontalPodAutoscaler"),
    ("readiness on the wrong path", "values.yaml", "  path: /ready", "  path: /api/echo", "ready on GET /ready"),
    ("S3 secret not wired", "templates/_helpers.tpl", "      - name: RINGTAIL_S3_SECRET_ACCESS_KEY", "      - name: AWS_SECRET",
     "S3 values"),
    ("cluster secret not wired", "templates/_helpers.tpl", "      - name: RINGTAIL_CLUSTER_SECRET", "      - name: CLUSTER_SECRET",
     "same cluster secret"),
    ("generated cluster secret dropped on uninstall", "templates/cluster-secret.yaml", "helm.sh/resource-policy: keep",
     "helm.sh/resource-policy: delete", "same cluster secret"),
    ("config says filesystem with S3 values", "templates/configmap.yaml", "\"storage_backend\" $storage.backend",
     "\"storage_backend\" \"filesystem\"", "S3 values"),
    ("no zone spread", "templates/ingester-statefulset.yaml", "- topologyKey: {{ $values.zoneAwareness.topologyKey }}",
     "- topologyKey: kubernetes.io/hostname", "Zone awareness"),
    ("a field ringtail does not know", "templates/configmap.yaml", "\"data_dir\" (include",
     "\"data_directory\" (include", "only RawConfig fields"),
    ("an invalid Kubernetes field", "templates/ingester-statefulset.yaml", "  minReadySeconds:", "  minReadySecs:",
     "strict schemas"),
    ("node name not the pod name", "templates/_helpers.tpl", "fieldPath: metadata.name", "fieldPath: spec.nodeName",
     "Ingester StatefulSet"),
    ("hard anti-affinity ignored", "templates/_helpers.tpl", "{{- if eq $values.podAntiAffinity \"hard\" }}",
     "{{- if false }}", "require one per node"),
    ("OTLP gRPC Service port aimed at the wrong container port", "templates/services.yaml",
     "      targetPort: otlp-grpc", "      targetPort: http", "reachable on the real ports"),
    ("a writable root filesystem", "values.yaml", "  readOnlyRootFilesystem: true", "  readOnlyRootFilesystem: false",
     "non-root"),
    ("no ingester anti-affinity", "values.yaml", "  podAntiAffinity: soft", "  podAntiAffinity: none", "prefer one per node"),
    ("a ReadWriteOnce blocks claim", "values.yaml", "    accessModes: [ReadWriteMany]", "    accessModes: [ReadWriteOnce]",
     "Filesystem store"),
    ("a config field dropped from the schema", "values.schema.json", "\"wal_cache_bytes\":", "\"wal_cache_bytez\":",
     "RawConfig"),
    ("a chart version that is not SemVer", "Chart.yaml", "version: 0.1.0", "version: one", "helm lint"),
    ("replicas below the replication factor allowed", "templates/configmap.yaml",
     "{{- if lt $ingesters $rf }}", "{{- if false }}", "fewer ingesters than the replication factor"),
    ("the image's RINGTAIL_STORAGE_PATH left in force", "templates/_helpers.tpl",
     "      - name: RINGTAIL_STORAGE_PATH", "      - name: STORAGE_PATH", "Dockerfiles is overridden"),
    ("a misspelt RINGTAIL_ variable", "templates/_helpers.tpl", "- name: RINGTAIL_ADVERTISE_ADDR",
     "- name: RINGTAIL_ADVERTISE_ADDRESS", "only RawConfig fields"),
    ("probes over plain HTTP while the port speaks TLS", "templates/_helpers.tpl",
     "        scheme: {{ include \"ringtail.httpScheme\" $root | upper }}", "        scheme: HTTP", "in the scheme the port speaks"),
    ("preStop over plain HTTP while the port speaks TLS", "templates/_helpers.tpl",
     "--url={{ include \"ringtail.httpScheme\" $root }}://", "--url=http://", "serves HTTPS"),
    ("ServiceMonitor scrapes HTTPS without the CA", "templates/servicemonitor.yaml",
     "            key: {{ .caKey }}", "            key: tls.crt", "serves HTTPS"),
    ("zones share one StatefulSet name", "templates/_helpers.tpl",
     "{{- printf \"%s-ingester-%s\" (include \"ringtail.fullname\" .root) $zone }}",
     "{{- printf \"%s-ingester\" (include \"ringtail.fullname\" .root) }}", "one ingester StatefulSet per zone"),
    ("zone not passed to the pods", "templates/_helpers.tpl", "      - name: RINGTAIL_ZONE", "      - name: ZONE",
     "one ingester StatefulSet per zone"),
    ("zone from another label", "templates/_helpers.tpl", "metadata.labels['{{ $values.zoneAwareness.topologyKey }}']",
     "metadata.labels['zone']", "Zone awareness"),
    ("one PDB for every zone", "templates/pdb.yaml",
     "      {{- include \"ringtail.componentSelectorLabels\" $ctx | nindent 6 }}\n      {{- include \"ringtail.zoneLabel\" $ctx | nindent 6 }}",
     "      {{- include \"ringtail.componentSelectorLabels\" $ctx | nindent 6 }}", "one PodDisruptionBudget per zone"),
    ("overrides mounted from no volume", "templates/_helpers.tpl", "      - name: overrides\n        mountPath",
     "      - name: config-overrides\n        mountPath", "overrides: a ConfigMap"),
    ("ServiceMonitor misses the ingesters", "templates/servicemonitor.yaml", "values: [distributor, ingester, querier, compactor]",
     "values: [distributor, querier, compactor]", "ServiceMonitor"),
    ("ServiceMonitor misses the compactors", "templates/servicemonitor.yaml", "values: [distributor, ingester, querier, compactor]",
     "values: [distributor, ingester, querier]", "ServiceMonitor"),
    ("no compactor Deployment", "templates/deployments.yaml", "list \"distributor\" \"querier\" \"compactor\"",
     "list \"distributor\" \"querier\"", "kept by compactors alone"),
]


def run_mutations(report: Report) -> None:
    for what, rel, old, new, must_fail in MUTATIONS:
        def attempt() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                broken = Path(tmp) / "ringtail"
                shutil.copytree(CHART, broken)
                target = broken / rel
                text = target.read_text()
                ensure(old in text, f"mutation text not found in {rel}: {old!r}")
                target.write_text(text.replace(old, new, 1))
                inner = Report()
                with contextlib.redirect_stdout(io.StringIO()):
                    run_all(broken, inner)
                caught = [f for f in inner.failed if must_fail in f]
                ensure(caught, f"no check containing {must_fail!r} failed; failed: {inner.failed or 'none'}")
        report.run(f"[mutation] {what} is caught", attempt)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-mutations", action="store_true", help="skip the mutation self-test")
    args = parser.parse_args()
    print(f"helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
          f"kubernetes-validate {kubernetes_validate.__version__}, Kubernetes {', '.join(KUBE_VERSIONS)}")
    print(f"not schema-checked (CRDs, asserted below instead): {sorted(k for _, k in CUSTOM_KINDS)}")
    report = Report()
    run_all(CHART, report)
    if not args.no_mutations:
        run_mutations(report)
    print(f"helm: {report.passed} passed, {len(report.failed)} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
