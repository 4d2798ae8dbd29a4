"""The status fields the kubelet and the Job controller write, as Kubernetes writes them. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

NODE = "standin-node"
POD_IP = "127.0.0.1"
# The kubelet keeps at most this much of a termination message, and of the log tail it falls back on.
MESSAGE_MAX = 4096
LOG_TAIL_BYTES, LOG_TAIL_LINES = 2048, 80


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _pod_conditions(now: datetime, *, running: bool, initialized: bool = True) -> list[dict[str, Any]]:
    ready = "True" if running else "False"
    return [
        {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": stamp(now)}
        for kind, status in (
            ("PodReadyToStartContainers", "True" if initialized else "False"),
            ("Initialized", "True" if initialized else "False"),
            ("Ready", ready),
            ("ContainersReady", ready),
            ("PodScheduled", "True"),
        )
    ]


def _container(pod: Mapping[str, Any], state: dict[str, Any], *, ready: bool, started: bool) -> dict[str, Any]:
    spec = pod["spec"]["containers"][0]
    return {
        "name": spec["name"],
        "image": spec.get("image", ""),
        "imageID": "",
        "containerID": f"standin://{pod['metadata'].get('uid', '')}",
        "ready": ready,
        "started": started,
        "restartCount": 0,
        "state": state,
    }


def waiting(pod: Mapping[str, Any], now: datetime, reason: str, message: str) -> dict[str, Any]:
    """A container that cannot start (CreateContainerConfigError: a missing Secret or key)."""
    return {
        "phase": "Pending",
        "hostIP": POD_IP,
        "podIP": POD_IP,
        "startTime": stamp(now),
        "conditions": _pod_conditions(now, running=False, initialized=True),
        "containerStatuses": [
            _container(pod, {"waiting": {"reason": reason, "message": message}}, ready=False, started=False)
        ],
    }


def running(pod: Mapping[str, Any], started: datetime) -> dict[str, Any]:
    return {
        "phase": "Running",
        "hostIP": POD_IP,
        "podIP": POD_IP,
        "startTime": stamp(started),
        "conditions": _pod_conditions(started, running=True),
        "containerStatuses": [_container(pod, {"running": {"startedAt": stamp(started)}}, ready=True, started=True)],
    }


def terminated(
    pod: Mapping[str, Any], started: datetime, finished: datetime, exit_code: int, message: str, reason: str = ""
) -> dict[str, Any]:
    """A container that ended: phase Succeeded on exit code 0, else Failed (restartPolicy Never)."""
    state = {
        "terminated": {
            "exitCode": exit_code,
            "reason": reason or ("Completed" if exit_code == 0 else "Error"),
            "startedAt": stamp(started),
            "finishedAt": stamp(finished),
            "containerID": f"standin://{pod['metadata'].get('uid', '')}",
            **({"message": message} if message else {}),
        }
    }
    return {
        "phase": "Succeeded" if exit_code == 0 else "Failed",
        "hostIP": POD_IP,
        "podIP": POD_IP,
        "startTime": stamp(started),
        "conditions": _pod_conditions(finished, running=False),
        "containerStatuses": [_container(pod, state, ready=False, started=False)],
    }


def termination_message(file_text: str, log_text: str, *, exit_code: int, policy: str) -> str:
    """The file's text; with FallbackToLogsOnError, the log's tail when the file is empty and the
    container failed."""
    message = file_text[:MESSAGE_MAX]
    if not message.strip() and exit_code != 0 and policy == "FallbackToLogsOnError":
        tail = "\n".join(log_text.splitlines()[-LOG_TAIL_LINES:])
        message = tail.encode()[-LOG_TAIL_BYTES:].decode(errors="ignore")
    return message


def job_condition(kind: str, now: datetime, reason: str = "", message: str = "") -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "lastProbeTime": stamp(now),
        "lastTransitionTime": stamp(now),
        **({"reason": reason} if reason else {}),
        **({"message": message} if message else {}),
    }


def job_status(previous: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], now: datetime) -> dict[str, Any]:
    """The counts the Job controller keeps, from the Job's Pods (end conditions are added by the caller)."""
    phases = [str((p.get("status") or {}).get("phase") or "Pending") for p in pods]
    ready = sum(
        1
        for p in pods
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    )
    status: dict[str, Any] = {
        "startTime": previous.get("startTime") or stamp(now),
        "active": sum(1 for phase in phases if phase in ("Pending", "Running")),
        "ready": ready,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    }
    succeeded = phases.count("Succeeded")
    failed = phases.count("Failed")
    if succeeded:
        status["succeeded"] = succeeded
    if failed:
        status["failed"] = failed
    return status
