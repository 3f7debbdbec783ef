"""The planner's ROS parameters in Foxglove's Parameters panel (the bridge's Parameters capability).

A client's get-parameters request is answered from the planner's standard parameter services
(``<planner>/list_parameters``, ``get_parameters``, ``describe_parameters``); a set-parameters
request is forwarded to ``<planner>/set_parameters``, so the planner's own validation decides.
A refused edit changes nothing: the client gets the unchanged value back and an error status
with the planner's reason. foxglove-sdk's ``Parameter`` has a name, a value and a type hint but no
description or range, so those (from ``describe_parameters``) are handed to ``show_descriptions``,
which the bridge publishes on a JSON channel.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Callable

import foxglove
from foxglove.websocket import ServerListener, WebSocketServer
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterDescriptor, ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, GetParameters, ListParameters, SetParameters
from rclpy.parameter import Parameter, parameter_value_to_python

ARRAY_TYPES = (ParameterType.PARAMETER_BYTE_ARRAY, ParameterType.PARAMETER_BOOL_ARRAY,
               ParameterType.PARAMETER_INTEGER_ARRAY, ParameterType.PARAMETER_DOUBLE_ARRAY,
               ParameterType.PARAMETER_STRING_ARRAY)
POLL_S = 0.005
"""How often a waiting request looks at its future."""


class PlannerUnavailable(RuntimeError):
    """The planner's parameter services are absent or did not answer in time."""


def foxglove_parameter(name: str, value: ParameterValue) -> foxglove.Parameter:
    """A ROS parameter value as Foxglove's; a double keeps its type hint (JSON would turn 2.0
    into 2), and an unset value stays unset (the SDK does not send it)."""
    python = parameter_value_to_python(value)
    if value.type == ParameterType.PARAMETER_DOUBLE:
        return foxglove.Parameter(name, value=python, type=foxglove.ParameterType.Float64)
    if value.type == ParameterType.PARAMETER_DOUBLE_ARRAY:
        return foxglove.Parameter(name, value=python, type=foxglove.ParameterType.Float64Array)
    if value.type == ParameterType.PARAMETER_BYTE_ARRAY:
        return foxglove.Parameter(name, value=b"".join(python), type=foxglove.ParameterType.ByteArray)
    return foxglove.Parameter(name, value=python)


def ros_value(value, declared_type: int) -> ParameterValue:
    """A value a client sent as a ROS parameter value: of the type the planner declared where it
    converts without loss (JSON cannot tell 2 from 2.0, nor type an empty list), else of its own
    type, so that a wrong type is the planner's to refuse. Raises TypeError for a value no ROS
    parameter can hold (a dict, a mixed list)."""
    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if isinstance(value, bytes):
        value = [bytes([b]) for b in value]
    if declared_type == ParameterType.PARAMETER_DOUBLE and whole(value):
        value = float(value)
    elif (declared_type == ParameterType.PARAMETER_DOUBLE_ARRAY and isinstance(value, list)
          and all(whole(v) or isinstance(v, float) for v in value)):
        value = [float(v) for v in value]
    if value == [] and declared_type in ARRAY_TYPES:
        return ParameterValue(type=declared_type)
    return Parameter("value", value=value).get_parameter_value()


def description_record(name: str, descriptor: ParameterDescriptor) -> dict:
    """What Foxglove's Parameter cannot carry: type, description, read-only, constraints, range."""
    def span(ranges) -> dict | None:
        return {"from_value": ranges[0].from_value, "to_value": ranges[0].to_value, "step": ranges[0].step} \
            if len(ranges) else None

    return {"name": name, "type": Parameter.Type(descriptor.type).name.lower(), "description": descriptor.description,
            "read_only": descriptor.read_only, "additional_constraints": descriptor.additional_constraints,
            "floating_point_range": span(descriptor.floating_point_range),
            "integer_range": span(descriptor.integer_range)}


class PlannerParameters:
    """Clients of the planner's parameter services, called from the Foxglove server's threads.

    The bridge's one executor thread spins rclpy (``nodes.run_node``); the SDK calls the listener
    on threads of its own. A call here sends its request (rclpy's ``Client.call_async`` is
    thread-safe) and polls, on that SDK thread, the future the executor completes when the answer
    arrives, until a deadline. So the executor is never blocked (waiting inside one of its own
    callbacks would deadlock it), and an absent or hung planner costs a client one bounded wait
    (the SDK handles that client's next messages after it) and an error status, never a stuck thread.
    """

    SERVICES = {ListParameters: "list_parameters", GetParameters: "get_parameters",
                DescribeParameters: "describe_parameters", SetParameters: "set_parameters"}

    def __init__(self, node, planner: str, timeout_s: float):
        self.planner, self.timeout_s = planner, timeout_s
        self._node = node
        self._clients = {srv: node.create_client(srv, f"{planner}/{name}") for srv, name in self.SERVICES.items()}
        self.interrupted = threading.Event()
        """Set while the server stops: every wait for an answer ends at once (the SDK's stop
        waits for the request callbacks in progress, and it is called on the executor thread,
        which completes the futures: a wait would last until its deadline)."""

    def deadline(self) -> float:
        return time.monotonic() + self.timeout_s

    def names(self, deadline: float) -> list[str]:
        return list(self._call(ListParameters, ListParameters.Request(), deadline).result.names)

    def values(self, names: list[str], deadline: float) -> list[ParameterValue]:
        return self._aligned(names, self._call(GetParameters, GetParameters.Request(names=names), deadline).values)

    def describe(self, names: list[str], deadline: float) -> list[ParameterDescriptor]:
        request = DescribeParameters.Request(names=names)
        return self._aligned(names, self._call(DescribeParameters, request, deadline).descriptors)

    def set(self, parameters: list[ParameterMsg], deadline: float) -> list:
        """One SetParametersResult per parameter (each accepted or refused on its own)."""
        request = SetParameters.Request(parameters=parameters)
        return self._aligned(parameters, self._call(SetParameters, request, deadline).results)

    def destroy(self) -> None:
        self.interrupted.set()
        for client in self._clients.values():
            self._node.destroy_client(client)

    def _call(self, srv_type, request, deadline: float):
        client = self._clients[srv_type]
        if not client.service_is_ready():
            raise PlannerUnavailable(f"{client.srv_name} is not available")
        future = client.call_async(request)
        while not future.done():
            if self.interrupted.wait(POLL_S):
                why = "the bridge stopped serving"
            elif time.monotonic() > deadline:
                why = f"no answer from {client.srv_name} within {self.timeout_s:g} s"
            else:
                continue
            client.remove_pending_request(future)  # a late answer is dropped
            raise PlannerUnavailable(why)
        return future.result()

    def _aligned(self, asked: list, answers) -> list:
        # The get and describe services answer an empty list when one name is unknown.
        if len(answers) != len(asked):
            raise PlannerUnavailable(f"{self.planner} answered {len(answers)} of {len(asked)} parameters")
        return list(answers)


class PlannerParametersListener(ServerListener):
    """Answers a Foxglove client's get/set-parameters requests from the planner (module docstring).

    ``server`` is the running server (None while stopped), for the status messages;
    ``show_descriptions(records)`` gets the ``description_record``s of each listing. A request
    never raises into the SDK: an absent planner is logged and reported to the clients, any other
    error counted by ``count_error`` (the node's callback errors) as well.
    """

    def __init__(self, planner: PlannerParameters, show_descriptions: Callable[[list[dict]], None],
                 count_error: Callable[[str, BaseException], None], logger):
        self.planner, self._show_descriptions = planner, show_descriptions
        self._count_error, self._logger = count_error, logger
        self.server: WebSocketServer | None = None
        self.requests: Counter[str] = Counter()  # get, set, refused (edits), failed (requests)
        self._shown_errors: set[str] = set()  # parameters whose refusal the clients are shown

    def serve(self, server: WebSocketServer | None) -> None:
        """Answer for ``server`` from now on; None (stopping): every wait for the planner ends at once."""
        self.server = server
        if server is None:
            self.planner.interrupted.set()
        else:
            self.planner.interrupted.clear()

    def on_get_parameters(self, client, param_names: list[str], request_id: str | None = None) -> list:
        self.requests["get"] += 1
        try:
            deadline = self.planner.deadline()
            known = self.planner.names(deadline)
            names = [name for name in param_names if name in known] if param_names else known
            values = self.planner.values(names, deadline)
            self._show_descriptions([description_record(name, descriptor) for name, descriptor
                                     in zip(names, self.planner.describe(names, deadline))])
            return [foxglove_parameter(name, value) for name, value in zip(names, values)]
        except Exception as error:  # noqa: BLE001 - nothing may escape into the server's thread
            self._failed("get", error)
            return []

    def on_set_parameters(self, client, parameters: list, request_id: str | None = None) -> list:
        self.requests["set"] += 1
        try:
            return self._set(parameters)
        except Exception as error:  # noqa: BLE001 - nothing may escape into the server's thread
            self._failed("set", error)
            return []

    def _set(self, parameters: list) -> list[foxglove.Parameter]:
        """The values after the edit: the new value of each accepted parameter, the unchanged one
        of each refused (for a parameter the planner does not have: none)."""
        deadline = self.planner.deadline()
        known = set(self.planner.names(deadline))
        names = [p.name for p in parameters if p.name in known]
        current = dict(zip(names, self.planner.values(names, deadline)))
        edits: list[ParameterMsg] = []
        refusals: dict[str, str] = {}
        for parameter in parameters:
            declared = current[parameter.name].type if parameter.name in current else ParameterType.PARAMETER_NOT_SET
            try:
                edits.append(ParameterMsg(name=parameter.name, value=ros_value(parameter.get_value(), declared)))
            except (TypeError, ValueError, AssertionError) as error:  # rclpy's checks of a value and its range
                refusals[parameter.name] = f"not a ROS parameter value: {error}"
        shown = []
        for edit, result in zip(edits, self.planner.set(edits, deadline) if edits else []):
            if result.successful:
                shown.append(foxglove_parameter(edit.name, edit.value))
                self._status(edit.name, None)
            else:
                refusals[edit.name] = result.reason
        sent = {p.name: p.get_value() for p in parameters}
        for name, reason in refusals.items():
            self.requests["refused"] += 1
            # rclpy's reason for a wrong type names the types by number: say which one it has
            kind = f" (a {Parameter.Type(current[name].type).name.lower()} parameter)" if name in current else ""
            self._status(name, f"{self.planner.planner} refused {name} = {sent[name]!r}{kind}: {reason}")
            if name in current:
                shown.append(foxglove_parameter(name, current[name]))
        return shown

    def _status(self, name: str, error: str | None) -> None:
        """Show ``error`` to the clients as the status of parameter ``name``; None: clear the one
        shown, so the clients see only refusals not made good since."""
        server, status_id = self.server, f"parameter {name}"
        if error is None:
            if server is not None and name in self._shown_errors:
                server.remove_status([status_id])
            self._shown_errors.discard(name)
            return
        self._logger.warning(error)
        if server is not None:
            server.publish_status(error, foxglove.StatusLevel.Error, id=status_id)
            self._shown_errors.add(name)

    def _failed(self, request: str, error: Exception) -> None:
        self.requests["failed"] += 1
        text = f"{request} parameters of {self.planner.planner} failed: {error}"
        if isinstance(error, PlannerUnavailable):
            self._logger.warning(text, throttle_duration_sec=2.0)
        else:
            self._count_error(f"foxglove {request} parameters", error)
        if self.server is not None:
            self.server.publish_status(text, foxglove.StatusLevel.Error)
