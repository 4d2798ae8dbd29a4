"""Stand-in CRDs for the built-in kinds the operator touches.

The test API server serves only custom resources, so Namespace, Secret,
CronJob, ... are served as CRDs of the same group, version and kind. Their
schemas are the official Kubernetes JSON schemas that the ``kubernetes-validate``
package ships, converted to structural OpenAPI v3, plus the defaults the real
server's defaulting code sets for the fields that matter most (so that
read-back objects look like a real server's) and a few of the checks of its
validation code that a schema can express (a Job's restartPolicy).

The API server writes these CRDs straight into etcd (see apiserver/standins.go).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

#: Kubernetes minor version whose schemas are used; the server reports 1.36.
SCHEMA_VERSION = "1.36"


class StandIn:
    def __init__(
        self,
        group: str,
        kind: str,
        plural: str,
        *,
        version: str = "v1",
        namespaced: bool = True,
        short_names: tuple[str, ...] = (),
        categories: tuple[str, ...] = (),
        status: bool = False,
        columns: tuple[tuple[str, str, str], ...] = (),
        selectable: tuple[str, ...] = (),
    ) -> None:
        self.group = group
        self.version = version
        self.kind = kind
        self.plural = plural
        self.namespaced = namespaced
        self.short_names = short_names
        self.categories = categories
        self.status = status
        self.columns = columns
        self.selectable = selectable


STANDINS: tuple[StandIn, ...] = (
    StandIn("", "Namespace", "namespaces", namespaced=False, short_names=("ns",), status=True,
            columns=(("Status", "string", ".status.phase"),)),
    StandIn("", "Secret", "secrets", columns=(("Type", "string", ".type"),)),
    StandIn("", "ConfigMap", "configmaps", short_names=("cm",)),
    StandIn("", "ServiceAccount", "serviceaccounts", short_names=("sa",)),
    # kubectl describe finds an object's Events with field selectors on involvedObject.
    StandIn("", "Event", "events", short_names=("ev",),
            columns=(("Type", "string", ".type"), ("Reason", "string", ".reason"),
                     ("Object", "string", ".involvedObject.name"), ("Message", "string", ".message")),
            selectable=(".involvedObject.kind", ".involvedObject.name", ".involvedObject.namespace",
                        ".involvedObject.uid", ".reason", ".type")),
    StandIn("", "Pod", "pods", short_names=("po",), categories=("all",), status=True,
            columns=(("Status", "string", ".status.phase"),)),
    StandIn("batch", "CronJob", "cronjobs", short_names=("cj",), categories=("all",), status=True,
            columns=(("Schedule", "string", ".spec.schedule"), ("Suspend", "boolean", ".spec.suspend"),
                     ("Last Schedule", "date", ".status.lastScheduleTime"))),
    StandIn("batch", "Job", "jobs", categories=("all",), status=True,
            columns=(("Succeeded", "integer", ".status.succeeded"),)),
    StandIn("coordination.k8s.io", "Lease", "leases",
            columns=(("Holder", "string", ".spec.holderIdentity"),)),
    StandIn("rbac.authorization.k8s.io", "Role", "roles"),
    StandIn("rbac.authorization.k8s.io", "RoleBinding", "rolebindings",
            columns=(("Role", "string", ".roleRef.name"),)),
    StandIn("rbac.authorization.k8s.io", "ClusterRole", "clusterroles", namespaced=False),
    StandIn("rbac.authorization.k8s.io", "ClusterRoleBinding", "clusterrolebindings", namespaced=False,
            columns=(("Role", "string", ".roleRef.name"),)),
    StandIn("events.k8s.io", "Event", "events",
            columns=(("Type", "string", ".type"), ("Reason", "string", ".reason"),
                     ("Object", "string", ".regarding.name"), ("Note", "string", ".note"))),
)

#: Defaults the real server's defaulting functions set (k8s.io/kubernetes
#: pkg/apis/*/v1/defaults.go), by definition name and property.
DEFAULTS: dict[str, dict[str, Any]] = {
    "io.k8s.api.core.v1.Namespace": {"spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}},
    "io.k8s.api.core.v1.NamespaceSpec": {"finalizers": ["kubernetes"]},
    "io.k8s.api.core.v1.Secret": {"type": "Opaque"},
    "io.k8s.api.batch.v1.CronJobSpec": {
        "concurrencyPolicy": "Allow",
        "suspend": False,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 1,
    },
    "io.k8s.api.batch.v1.JobSpec": {
        "backoffLimit": 6,
        "completionMode": "NonIndexed",
        "suspend": False,
    },
    "io.k8s.api.core.v1.PodSpec": {
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "terminationGracePeriodSeconds": 30,
        "securityContext": {},
    },
    "io.k8s.api.core.v1.Container": {
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    },
    "io.k8s.api.core.v1.ContainerPort": {"protocol": "TCP"},
    "io.k8s.api.core.v1.ServicePort": {"protocol": "TCP"},
}

#: JSON Schema formats the CRD API knows; others are dropped.
FORMATS = {"int32", "int64", "float", "double", "byte", "binary", "date", "date-time", "password", "uuid"}

PRESERVE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
SPECIAL: dict[str, dict[str, Any]] = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"x-kubernetes-int-or-string": True},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"x-kubernetes-int-or-string": True},
    "io.k8s.apimachinery.pkg.apis.meta.v1.Time": {"type": "string", "format": "date-time"},
    "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime": {"type": "string", "format": "date-time"},
    "io.k8s.apimachinery.pkg.runtime.RawExtension": PRESERVE,
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1": PRESERVE,
}


def schema_dir(version: str = SCHEMA_VERSION) -> Path:
    """The kubernetes-validate schema folder for a Kubernetes minor version
    (the nearest one it has, preferring older, if it lacks that one)."""
    base = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    want = tuple(int(x) for x in version.split("."))
    candidates = []
    for entry in base.iterdir():
        m = re.match(r"^v(\d+)\.(\d+)\.(\d+)-local$", entry.name)
        if m:
            have = (int(m.group(1)), int(m.group(2)))
            candidates.append(((have != want, have > want, abs(have[1] - want[1]), -int(m.group(3))), entry))
    if not candidates:
        raise RuntimeError("kubernetes-validate ships no schemas")
    return Path(str(min(candidates, key=lambda c: c[0])[1]))


class _Converter:
    """JSON Schema (draft 2020-12, as kubernetes-validate ships it) to
    structural OpenAPI v3 for a CRD."""

    def __init__(self, defs: dict[str, Any], descriptions: bool) -> None:
        self.defs = defs
        self.descriptions = descriptions

    def definition(self, name: str, stack: tuple[str, ...]) -> dict[str, Any]:
        if name in SPECIAL:
            return copy.deepcopy(SPECIAL[name])
        if name in stack:  # recursive type
            return dict(PRESERVE)
        out = self.convert(self.defs[name], (*stack, name))
        for prop, value in DEFAULTS.get(name, {}).items():
            if prop in out.get("properties", {}):
                out["properties"][prop]["default"] = value
        return out

    def convert(self, s: dict[str, Any], stack: tuple[str, ...]) -> dict[str, Any]:
        if "$ref" in s:
            out = self.definition(s["$ref"].rsplit("/", 1)[-1], stack)
            if self.descriptions and s.get("description"):
                out["description"] = s["description"]
            return out
        if "oneOf" in s or "anyOf" in s:
            return {"x-kubernetes-int-or-string": True}

        out: dict[str, Any] = {}
        if self.descriptions and s.get("description"):
            out["description"] = s["description"]
        types = s.get("type")
        if isinstance(types, list):
            types = [t for t in types if t != "null"]
            types = types[0] if len(types) == 1 else None
        if types:
            out["type"] = types
        if s.get("format") in FORMATS:
            out["format"] = s["format"]
        if "enum" in s:
            values = [v for v in s["enum"] if v is not None]
            if values:
                out["enum"] = values
        for key in ("x-kubernetes-map-type",):
            if key in s:
                out[key] = s[key]

        if types == "object" or "properties" in s:
            out["type"] = "object"
            props = s.get("properties") or {}
            addl = s.get("additionalProperties")
            if props:
                out["properties"] = {k: self.convert(v, stack) for k, v in props.items()}
                required = [r for r in s.get("required", []) if r in props]
                if required:
                    out["required"] = required
            elif isinstance(addl, dict):
                out["additionalProperties"] = self.convert(addl, stack)
            else:
                out["x-kubernetes-preserve-unknown-fields"] = True
        elif types == "array":
            items = self.convert(s.get("items") or {}, stack)
            out["items"] = items
            list_type = s.get("x-kubernetes-list-type")
            if list_type == "map":
                keys = s.get("x-kubernetes-list-map-keys") or []
                props = items.get("properties", {})
                if keys and all(
                    k in items.get("required", []) or "default" in props.get(k, {}) for k in keys
                ):
                    out["x-kubernetes-list-type"] = "map"
                    out["x-kubernetes-list-map-keys"] = keys
            elif list_type == "set" and items.get("type") in ("string", "integer", "number", "boolean"):
                out["x-kubernetes-list-type"] = "set"
        elif not types and not out.get("x-kubernetes-int-or-string"):
            # Untyped: anything goes.
            out.update(PRESERVE)
            out.pop("type", None)
            out["x-kubernetes-preserve-unknown-fields"] = True
        return out


def _find_definition(defs: dict[str, Any], group: str, version: str, kind: str) -> str:
    for name, d in defs.items():
        for gvk in d.get("x-kubernetes-group-version-kind", []):
            if (gvk.get("group", ""), gvk.get("version"), gvk.get("kind")) == (group, version, kind):
                return name
    raise KeyError(f"no schema for {group}/{version} {kind}")


def _restrict_job_template(pod_spec: dict[str, Any]) -> None:
    """A Job's pods must say restartPolicy OnFailure or Never (validation.go)."""
    props = pod_spec["properties"]
    props["restartPolicy"] = {**props["restartPolicy"], "enum": ["OnFailure", "Never"]}
    pod_spec["required"] = sorted(set(pod_spec.get("required", [])) | {"restartPolicy"})


def crd_for(s: StandIn, defs: dict[str, Any], descriptions: bool = True) -> dict[str, Any]:
    name = _find_definition(defs, s.group, s.version, s.kind)
    conv = _Converter(defs, descriptions)
    schema = conv.definition(name, ())
    props = schema["properties"]
    props["metadata"] = {"type": "object"}
    for k in ("apiVersion", "kind"):
        props[k] = {k2: v for k2, v in props[k].items() if k2 != "enum"} | {"type": "string"}
    if s.kind == "Job":
        _restrict_job_template(props["spec"]["properties"]["template"]["properties"]["spec"])
    if s.kind == "CronJob":
        job_spec = props["spec"]["properties"]["jobTemplate"]["properties"]["spec"]
        _restrict_job_template(job_spec["properties"]["template"]["properties"]["spec"])

    version: dict[str, Any] = {
        "name": s.version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
    }
    if s.status:
        version["subresources"] = {"status": {}}
    if s.selectable:
        version["selectableFields"] = [{"jsonPath": p} for p in s.selectable]
    if s.columns:
        version["additionalPrinterColumns"] = [
            {"name": n, "type": t, "jsonPath": p} for n, t, p in s.columns
        ] + [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    names: dict[str, Any] = {
        "plural": s.plural,
        "singular": s.kind.lower(),
        "kind": s.kind,
        "listKind": s.kind + "List",
    }
    if s.short_names:
        names["shortNames"] = list(s.short_names)
    if s.categories:
        names["categories"] = list(s.categories)
    annotations = {}
    if s.group.endswith(".k8s.io") or s.group.endswith(".kubernetes.io"):
        annotations["api-approved.kubernetes.io"] = "https://github.com/kubernetes/kubernetes/pull/1"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{s.plural}.{s.group}", "annotations": annotations},
        "spec": {
            "group": s.group,
            "names": names,
            "scope": "Namespaced" if s.namespaced else "Cluster",
            "versions": [version],
        },
    }


def generate(version: str = SCHEMA_VERSION, descriptions: bool = True) -> dict[str, Any]:
    """A List of the stand-in CRDs."""
    with open(schema_dir(version) / "_definitions.json") as f:
        defs = json.load(f)["$defs"]
    return {"apiVersion": "v1", "kind": "List", "items": [crd_for(s, defs, descriptions) for s in STANDINS]}


def cached(cache_dir: Path, version: str = SCHEMA_VERSION) -> Path:
    """Path of the generated List, made once per schema set and generator."""
    import kubernetes_validate

    h = hashlib.sha256()
    h.update(Path(__file__).read_bytes())
    h.update(kubernetes_validate.__version__.encode())
    h.update(str(schema_dir(version)).encode())
    path = Path(cache_dir) / f"standins-{h.hexdigest()[:16]}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(generate(version), separators=(",", ":")))
        tmp.replace(path)
    return path


if __name__ == "__main__":
    import sys

    json.dump(generate(), sys.stdout, indent=1)
