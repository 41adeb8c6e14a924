"""Errors of the wan-accel command line, each with a message a user can act on (what failed, where, the fix)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

SECRET_IN_URL = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*):[^\s/@]*@")


def mask_secrets(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` written ``***``, for anything printed or
    saved (a server address may carry the credentials of a proxy in front of ComfyUI)."""
    return SECRET_IN_URL.sub(r"\g<head>:***@", text)


class WanAccelError(Exception):
    """Base of every error the CLI reports as a message (no traceback); ``exit_code`` is the process status.
    Its text never shows a password that a server address carries."""

    exit_code = 1

    def __str__(self) -> str:
        return mask_secrets(super().__str__())


class UsageError(WanAccelError):
    """A command-line argument, input file or workflow file is wrong; the message names it."""

    exit_code = 2


class ServerUnreachable(WanAccelError):
    """No ComfyUI answers at the server address."""

    exit_code = 3

    def __init__(self, url: str, reason: str):
        super().__init__(f"cannot reach ComfyUI at {url} ({reason}). Start it (python main.py --listen 127.0.0.1 "
                         f"--port 8188) or pass --server http://HOST:PORT")
        self.url = url


class ServerError(WanAccelError):
    """ComfyUI answered something this client does not expect (an HTTP error, a malformed reply)."""

    exit_code = 3


class MalformedReply(ServerError):
    """ComfyUI answered, but not in the shape its API has (a field missing or of another type, a body cut short):
    the server is not a ComfyUI this client speaks to, or something between them changed the reply."""

    def __init__(self, where: str, problem: str):
        super().__init__(f"{where}: {problem}; is it a ComfyUI server, with nothing in between that changes its "
                         f"replies? Check it with: wan-accel doctor --server URL")


@dataclass(frozen=True)
class MissingModelFile:
    """A model file a graph names that the server does not list, and the folder it belongs in."""

    file: str
    folder: str
    node_id: str
    node_label: str
    input_name: str

    def describe(self) -> str:
        """One line: the file, where to put it, which node wants it."""
        return (f"{self.file}: put it in ComfyUI/models/{self.folder}/ "
                f"(node #{self.node_id} {self.node_label}, input {self.input_name})")


class MissingModel(WanAccelError):
    """Model files the graph needs are not on the server."""

    exit_code = 4

    def __init__(self, missing: list[MissingModelFile]):
        lines = "\n".join(f"  {item.describe()}" for item in missing)
        super().__init__(f"missing model file{'s' if len(missing) > 1 else ''} on the server:\n{lines}\n"
                         f"Then rerun; ComfyUI lists new files without a restart.")
        self.missing = missing


class MissingNodeType(WanAccelError):
    """The server has no node class the graph uses (a custom-node pack is not installed or failed to import)."""

    exit_code = 4

    def __init__(self, class_type: str, node_id: str):
        fix = ("install or update wan-accel in ComfyUI/custom_nodes and restart ComfyUI (its log says why it "
               "failed to import, if it did)" if class_type.startswith("WanAccel")
               else "install the custom-node pack that provides it, or update ComfyUI")
        super().__init__(f"the server has no node type {class_type} (node #{node_id}): {fix}")
        self.class_type = class_type


class PromptInvalid(WanAccelError):
    """ComfyUI rejected the graph; the message lists each failing node and input."""

    exit_code = 5

    def __init__(self, summary: str, node_lines: list[str]):
        body = "\n".join(f"  {line}" for line in node_lines)
        super().__init__(f"ComfyUI rejected the workflow: {summary}" + (f"\n{body}" if body else ""))
        self.node_lines = node_lines


class ExecutionFailed(WanAccelError):
    """A queued prompt failed while running; the message names the node and the exception."""

    exit_code = 6

    def __init__(self, node_id: str, node_label: str, exception_type: str, message: str, traceback_tail: str = ""):
        text = f"node #{node_id} {node_label} failed: {exception_type}: {message.strip()}"
        if traceback_tail:
            text += f"\n  where: {traceback_tail}"
        super().__init__(text)
        self.node_id = node_id


class Interrupted(WanAccelError):
    """The user (or another client) interrupted the prompt."""

    exit_code = 130


def node_label(graph: Mapping[str, Any], node_id: str, fallback: str = "?") -> str:
    """How a node is named in messages: its title if the graph has one, else its class_type."""
    node = graph.get(str(node_id)) or {}
    title = (node.get("_meta") or {}).get("title")
    return title or node.get("class_type") or fallback


def _describe_error(error: Mapping[str, Any]) -> str:
    """One validation error of the host as 'message: details' without repeating itself."""
    message, details = str(error.get("message", "")).strip(), str(error.get("details", "")).strip()
    return f"{message}: {details}" if details and details not in message else message or details


def node_error_lines(node_errors: Mapping[str, Any], graph: Mapping[str, Any]) -> list[str]:
    """One line per failing node input: 'node #8 KSampler, input steps: Value 0 smaller than min of 1: steps'."""
    lines = []
    for node_id, info in sorted(node_errors.items(), key=lambda item: (len(str(item[0])), str(item[0]))):
        info = info if isinstance(info, Mapping) else {}
        label = node_label(graph, node_id, str(info.get("class_type", "?")))
        errors = info.get("errors") if isinstance(info.get("errors"), list) else []
        for error in (item for item in errors if isinstance(item, Mapping)):
            extra = error.get("extra_info")
            input_name = extra.get("input_name") if isinstance(extra, Mapping) else None
            where = f", input {input_name}" if input_name else ""
            lines.append(f"node #{node_id} {label}{where}: {_describe_error(error)}")
    return lines


def rejection_error(payload: Mapping[str, Any], graph: Mapping[str, Any]) -> WanAccelError:
    """The error for a ``POST /prompt`` answered 400: a missing node type, or invalid inputs per node."""
    error = payload.get("error")
    node_errors = payload.get("node_errors") if isinstance(payload.get("node_errors"), Mapping) else {}
    missing_type = isinstance(error, Mapping) and (
        error.get("type") == "missing_node_type"   # ComfyUI 0.33: its own type, the node in extra_info
        or (error.get("type") == "invalid_prompt" and "does not exist" in str(error.get("message", ""))))  # 0.3.64
    if missing_type:
        extra = error.get("extra_info") if isinstance(error.get("extra_info"), Mapping) else {}
        node_id = str(extra.get("node_id") or str(error.get("details", "")).replace("Node ID", "").strip(" '#"))
        class_type = (graph.get(node_id) or {}).get("class_type") or extra.get("class_type")
        if isinstance(class_type, str):
            return MissingNodeType(class_type, node_id)
    if isinstance(error, Mapping):
        summary = str(error.get("message", "")) if node_errors else _describe_error(error)
    else:
        summary = str(error)
    return PromptInvalid(summary, node_error_lines(node_errors, graph))


def execution_error(details: Mapping[str, Any], graph: Mapping[str, Any]) -> WanAccelError:
    """The error for an ``execution_error`` / ``execution_interrupted`` message of the host."""
    node_id = str(details.get("node_id", "?"))
    label = node_label(graph, node_id, str(details.get("node_type", "?")))
    if "exception_type" not in details:
        return Interrupted(f"the prompt was interrupted at node #{node_id} {label}")
    traceback = details.get("traceback") if isinstance(details.get("traceback"), list) else []
    frames = [entry.strip().splitlines()[0] for entry in traceback
              if isinstance(entry, str) and entry.strip().startswith("File ")]
    exception_type = str(details.get("exception_type")).rsplit(".", 1)[-1]  # the host qualifies it with its module
    return ExecutionFailed(node_id, label, exception_type, str(details.get("exception_message", "")),
                           frames[-1] if frames else "")
