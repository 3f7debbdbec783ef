"""Run a task's nodes as separate processes, for machines without ros2 launch (``loop-ros up``
and ``loop-ros bench loop`` use it).

A process supervisor, not a launch clone: it starts the same node executables with the same
params file as ``launch/loop.launch.py`` (the trainer unless told not to, the task's nodes,
``nodes.task_nodes``, optionally the Foxglove bridge) as managed nodes, brings them up in that
order through their lifecycle services (the trainer is active before the sim steps, so it records
from the first tick), stops everything when one node exits, stops all after a duration or a signal
(the robots' nodes together, then the trainer: ``stop_nodes``) and merges the
nodes' own summary files into one JSON summary.

Signed models: the trainer signs each model it publishes and the planner accepts only models
signed by a key it trusts (``core.signing``). ``key_overrides`` creates an Ed25519 key pair on
first use in the keys directory (default ``$LOOP_ROS_KEYS_DIR``, else ``~/.ros/loop_ros/keys``;
the tests set the variable to a temporary directory) and passes ``security.signing_key`` to the
trainer and ``security.trusted_keys`` to the planner, unless the params file sets them.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from loop_ros.cpu_quota import CpuQuota
from loop_ros.nodes import FOXGLOVE, TRAINER, TRAINER_ENV, task_nodes

ROBOT_PREFIX = "robot"
"""A fleet's namespaces: robot0, robot1, ... (under ``--namespace`` when one is given)."""
TRANSITION_TIMEOUT_S = 600.0
"""Longest configure or activate of one node under ``loop-ros up`` (the trainer's configure loads its
whole replay: a large one takes minutes on a slow host)."""
MANAGED = "autostart:=false"
"""Every node waits, unconfigured, to be brought up in order through its lifecycle services."""
DEFAULT_DOMAIN_ID = 42
STOP_GRACE_S = 10.0
POLL_S = 0.1
PLANNER_KEYS = ("ticks", "achieved_hz", "deadline_misses", "stale_states", "invalid_states", "no_model_ticks",
                "plan_latency_median_ms", "plan_latency_p99_ms", "tick_period_p99_ms", "tick_jitter_p99_ms",
                "model_version", "model_swaps", "swap_deadline_misses", "controller", "bundle_rejections")
SIM_KEYS = ("violations", "mean_speed", "episode_returns")
TRAINER_KEYS = ("replay_transitions", "model_versions_published", "gate_passes", "gate_refusals")
UNPAIRED = "replay_unpaired_"  # the trainer's counts of states that completed no transition, by reason


def node_environment(domain_id: int | None) -> dict[str, str]:
    """The nodes' environment: DDS discovery on localhost only, Fast DDS, one domain."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else env.get("ROS_DOMAIN_ID", DEFAULT_DOMAIN_ID))
    return env


@dataclass(frozen=True)
class NodeOptions:
    """The standard ROS 2 options of every node of a run (the launch file's arguments of the same names)."""

    namespace: str = ""
    """Every node's namespace: its relative topics (state, action, model...) and its name move under it."""
    log_level: str | None = None
    use_sim_time: bool = False
    autostart: bool = True
    """Bring the nodes up through their lifecycle services; False: leave them unconfigured for the
    user's own lifecycle manager (``ros2 lifecycle set``)."""

    def ros_args(self, robot: str = "") -> tuple[str, ...]:
        """The ROS arguments of a node of ``robot`` (a fleet's sub-namespace; "": the run's own)."""
        path = "/".join(part for part in (self.namespace.strip("/"), robot) if part)
        namespace = ("-r", f"__ns:=/{path}") if path else ()
        level = ("--log-level", self.log_level) if self.log_level else ()
        return namespace + level + (("-p", "use_sim_time:=true") if self.use_sim_time else ())


def node_command(name: str, params: Path | None, summary: Path, overrides: tuple[str, ...] = (),
                 options: NodeOptions = NodeOptions()) -> list[str]:
    """The command line of node ``name`` (``planner``, or ``robot0/planner`` in a fleet: the robot's
    namespace, then the node); ``overrides`` are ``section.field:=value`` parameters. The node
    writes its summary to ``summary``."""
    robot, _, node = name.rpartition("/")
    params_file = ("--params-file", str(params)) if params is not None else ()
    return [sys.executable, "-m", f"loop_ros.nodes.{node}", "--summary", str(summary),
            "--ros-args", *params_file, "-r", f"__node:={node}", *options.ros_args(robot),
            *(item for override in overrides for item in ("-p", override))]


def robot_names(robots: int) -> tuple[str, ...]:
    """The namespaces of a fleet of ``robots`` (``--robots N``); () for one robot, which keeps the run's own."""
    return tuple(f"{ROBOT_PREFIX}{i}" for i in range(robots)) if robots > 1 else ()


def summary_path(summary_dir: Path, name: str) -> Path:
    return summary_dir / f"{name.replace('/', '.')}.json"


def fresh_overrides(data_dir: Path) -> dict[str, tuple[str, ...]]:
    """``--fresh``: the trainer records into ``data_dir`` (empty), publishes from its first fit on and
    keeps every model it publishes in ``data_dir/models``; the planner's bundle is the trainer's
    bundle directory there, which does not exist yet, and the trainer is told so (its gate then has
    no reference to hold a model to, and its versions start at 1)."""
    bundle = f"task.bundle:={data_dir / 'bundle'}"
    return {TRAINER: (f"trainer.data_dir:={data_dir}", "trainer.publish_after:=0", "trainer.keep_models:=-1", bundle),
            "planner": (bundle,)}


def key_overrides(params: Path | None, keys_dir: Path | None = None,
                  started: tuple[str, ...] = (TRAINER, "planner")) -> dict[str, tuple[str, ...]]:
    """The trainer signs with, and the planner trusts, the key pair in ``keys_dir`` (created if
    absent, ``core.signing.ensure_key_pair``), unless the params file sets ``security.signing_key``
    (trainer) or ``security.trusted_keys`` (planner). Values are written as YAML strings, so any
    path passes ``-p`` intact."""
    from loop_ros.core.params_file import load_params_file
    from loop_ros.core.signing import default_keys_dir, ensure_key_pair, key_paths

    overrides: dict[str, tuple[str, ...]] = {}
    wanted = {name: key for name, key in {TRAINER: "security.signing_key", "planner": "security.trusted_keys"}.items()
              if name in started}  # a robot without a trainer (--no-trainer) needs no private key
    for name, key in wanted.items():
        if params is None or not any(load_params_file(str(params), node).get(key) for node in (name, f"/{name}")):
            overrides[name] = ()
    if overrides:
        # A robot whose trainer runs elsewhere only needs the workstation's public key copied here.
        private, public = key_paths(default_keys_dir() if keys_dir is None else keys_dir)
        if TRAINER in overrides or not public.is_file():
            private, public = ensure_key_pair(keys_dir)
        private, public = private.resolve(), public.resolve()
        if TRAINER in overrides:
            overrides[TRAINER] = (f"security.signing_key:={json.dumps(str(private))}",)
        if "planner" in overrides:
            overrides["planner"] = (f"security.trusted_keys:=[{json.dumps(str(public))}]",)
    return overrides


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the supervisor dies without stopping us (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass


def start_nodes(names, params: Path | None, summary_dir: Path, env: dict,
                overrides: dict[str, tuple[str, ...]] | None = None,
                trainer_quota: CpuQuota | None = None, options: NodeOptions = NodeOptions()) -> dict[str, subprocess.Popen]:
    """Start ``names`` as managed nodes that wait unconfigured (``autostart:=false``) for
    ``bring_up_in_order``. The trainer is put under ``trainer_quota`` when one is given."""
    overrides, processes = overrides or {}, {}
    for name in names:
        command = node_command(name, params, summary_path(summary_dir, name), overrides.get(name, ()) + (MANAGED,),
                               options)
        # A session of their own: a terminal's Ctrl-C reaches the nodes once, through us.
        processes[name] = subprocess.Popen(command, env={**env, **TRAINER_ENV} if name == TRAINER else env,
                                           start_new_session=True, preexec_fn=_die_with_parent)
        if name == TRAINER and trainer_quota is not None:
            trainer_quota.add(processes[name].pid)
    return processes


def bring_up_in_order(processes: dict[str, subprocess.Popen], env: dict, log_dir: Path, received: list[int],
                      options: NodeOptions = NodeOptions()) -> str | None:
    """Configure and activate the nodes in start order through their lifecycle services
    (``nodes.lifecycle_manager``: the trainer records before the sim steps). Returns why that
    failed (a node exited meanwhile, a transition failed, a signal came), None once every node is active."""
    command = [sys.executable, "-m", "loop_ros.nodes.lifecycle_manager", *processes, "--timeout",
               str(TRANSITION_TIMEOUT_S), "--ros-args", *NodeOptions(options.namespace).ros_args()]
    log = log_dir / "lifecycle_manager.log"  # a file, not a pipe: nothing it writes can block it
    with open(log, "w", encoding="utf-8") as stderr:
        manager = subprocess.Popen(command, env=env, stderr=stderr, start_new_session=True,
                                   preexec_fn=_die_with_parent)
    try:
        while manager.poll() is None:
            exited = [name for name, p in processes.items() if p.poll() is not None]
            if exited:
                return f"{exited[0]} exited with {processes[exited[0]].returncode} while being brought up"
            if received:
                return f"received {signal.Signals(received[0]).name} while the nodes were being brought up"
            time.sleep(POLL_S)
    finally:
        if manager.poll() is None:
            manager.kill()
            manager.wait()
    if manager.returncode == 0:
        return None
    failures = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines()
                if line.startswith("lifecycle_manager:")]  # its one line says which node and transition failed
    return f"lifecycle bring-up failed: {failures[-1] if failures else f'exit {manager.returncode}'}"


@contextlib.contextmanager
def signals_received():
    """SIGINT and SIGTERM are noted in the yielded list (the run stops in order), not raised."""
    received: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _: received.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def supervise(processes: dict[str, subprocess.Popen], duration: float | None,
              received: list[int]) -> tuple[str, int, bool]:
    """Wait for a signal (noted in ``received``), the duration, or a node exiting.

    Returns (why, the signal to stop the others with, whether a node exited on its own).
    """
    deadline = time.monotonic() + duration if duration is not None else None
    while True:
        exited = [name for name, p in processes.items() if p.poll() is not None]
        if exited:
            return f"{exited[0]} exited with {processes[exited[0]].returncode}", signal.SIGINT, True
        if received:
            return f"received {signal.Signals(received[0]).name}", received[0], False
        if deadline is not None and time.monotonic() >= deadline:
            return "duration reached", signal.SIGINT, False
        time.sleep(POLL_S)


def stop_nodes(processes: dict[str, subprocess.Popen], signum: int, grace_s: float = STOP_GRACE_S) -> set[str]:
    """Stop the robots' nodes together, then the trainer: ``signum``, then SIGTERM and SIGKILL after
    grace periods. Together: a sim that outlives its planner drives a car without a controller
    (braking straight ahead, out of the keep-in circle at speed, counted as violations), and a planner
    that outlives its sim counts stale states. The trainer last, so it records the robots' last steps.
    Returns the names of the nodes that outlived ``signum``'s grace period (sent SIGTERM or SIGKILL)."""
    robots = [name for name in processes if name != TRAINER]
    outlived: set[str] = set()
    for group in (robots, [TRAINER] if TRAINER in processes else []):
        outlived |= _stop_together({name: processes[name] for name in group}, signum, grace_s)
    return outlived


def _stop_together(group: dict[str, subprocess.Popen], signum: int, grace_s: float) -> set[str]:
    outlived: set[str] = set()
    steps = ((signum, grace_s), (signal.SIGTERM, grace_s / 2), (signal.SIGKILL, grace_s / 2))
    for step, (follow_up, wait_s) in enumerate(steps):
        running = {name: process for name, process in group.items() if process.poll() is None}
        if step > 0:
            outlived |= set(running)
        for process in running.values():
            process.send_signal(follow_up)
        deadline = time.monotonic() + wait_s
        for process in running.values():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                pass
    return outlived


def merged_summary(task_name: str, reason: str, elapsed_s: float, processes: dict[str, subprocess.Popen],
                   summary_dir: Path) -> dict:
    """Headline figures of the trainer (replay size, why states completed no transition, models
    published) and of the robot (``robot_figures``; a fleet's under ``robots``, by namespace), and
    each node's summary."""
    nodes = {}
    for name in processes:
        path = summary_path(summary_dir, name)
        nodes[name] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    summary = {"task": task_name, "stopped_because": reason, "wall_time_s": elapsed_s,
               "exit_codes": {name: p.returncode for name, p in processes.items()}}
    trainer = nodes.get(TRAINER) or {}
    summary.update({key: trainer.get(key) for key in TRAINER_KEYS})
    summary["replay_unpaired"] = {key.removeprefix(UNPAIRED): n for key, n in trainer.items()
                                  if key.startswith(UNPAIRED)}
    robots = sorted({name.rpartition("/")[0] for name in processes if "/" in name})
    if robots:  # a fleet: each robot's figures under its name
        summary["robots"] = {robot: robot_figures({name.rpartition("/")[2]: node for name, node in nodes.items()
                                                   if name.startswith(f"{robot}/")} | {TRAINER: trainer})
                             for robot in robots}
    else:
        summary.update(robot_figures(nodes))
    summary["nodes"] = nodes
    return summary


def robot_figures(nodes: dict) -> dict:
    """Headline figures of one robot's planner (rate, misses, model swaps) and sim (violations,
    returns), and how its online learning went (``learning_timeline``)."""
    figures = {key: (nodes.get(name) or {}).get(key) for name, keys in (("planner", PLANNER_KEYS), ("sim", SIM_KEYS))
               for key in keys}
    figures["swaps_rejected"] = (nodes.get("planner") or {}).get("bundle_errors")
    figures["learning"] = learning_timeline(nodes)
    return figures


def learning_timeline(nodes: dict) -> dict:
    """How online learning went over time: per sim episode, when it ended (s after the first
    episode's start), its return and violation ticks, and the model version the planner was
    using; per trainer publication, its time, version, transitions and backlog; and the
    longest time the planner's newest available model was not refreshed (``max_model_age_s``)."""
    sim, planner, trainer = (nodes.get(name) or {} for name in ("sim", "planner", TRAINER))
    episodes, swaps = sim.get("episodes") or [], planner.get("swap_log") or []
    publications = trainer.get("publications") or []
    times = [e["wall_time"] for e in episodes if "wall_time" in e]
    if not times:
        return {}
    start = times[0] - episodes[0]["steps"] / max(sim.get("achieved_hz") or 50.0, 1e-9)

    def version_at(wall_time: float):
        used = [s["version"] for s in swaps if s["wall_time"] <= wall_time]
        return used[-1] if used else None

    rows = [{"t_s": round(e["wall_time"] - start, 2), "return": e["return"], "violations": e["violations"],
             "terminated": e.get("terminated"), "model_version": version_at(e["wall_time"])}
            for e in episodes if "wall_time" in e]
    published = [p["wall_time"] for p in publications]
    gaps = [b - a for a, b in zip(published, published[1:])] + ([times[-1] - published[-1]] if published else [])
    return {"episodes": rows,
            "publications": [{**p, "t_s": round(p["wall_time"] - start, 2)} for p in publications],
            "first_model_at_s": round(published[0] - start, 2) if published else None,
            "max_model_age_s": round(max(gaps), 2) if gaps else None,
            "violation_ticks_last_10_episodes": sum(r["violations"] for r in rows[-10:])}


def bring_up(task, params: Path | None, duration: float | None, overrides: dict[str, tuple[str, ...]] | None = None,
             trainer: bool = True, domain_id: int | None = None, foxglove: bool = False,
             explore: bool = False, keys_dir: Path | None = None,
             trainer_cpus: float | None = None, options: NodeOptions = NodeOptions(),
             robots: int = 1, settings: tuple[str, ...] = ()) -> tuple[dict, bool]:
    """Run the nodes of ``task`` (a ``core.tasks.Task``; and the trainer, and the Foxglove bridge) until
    ``duration``, a signal or a node's exit, every node told ``task.name`` and given ``options``; the
    trainer signs with and the planner trusts ``key_overrides(params, keys_dir)``. ``robots`` > 1: a
    fleet, each robot's nodes in its own namespace (``robot_names``), all on the one trainer.

    Returns the merged summary and whether the run was clean (``stopped_cleanly``).
    ``settings`` (``section.field:=value``: the user's) go to every node, before ``up``'s own overrides.
    """
    fleet = robot_names(robots)
    per_robot = tuple(f"{robot}/{node}".lstrip("/") for robot in fleet or ("",) for node in task_nodes(task))
    bridge = (f"{fleet[0]}/{FOXGLOVE}" if fleet else FOXGLOVE,) if foxglove else ()  # a fleet's view: the first robot
    names = ((TRAINER,) if trainer else ()) + per_robot + bridge
    by_kind = {**(overrides or {})}  # per kind of node (trainer, sim, planner...), for every robot alike
    for kind, keys in key_overrides(params, keys_dir, tuple(name.rpartition("/")[2] for name in names)).items():
        by_kind[kind] = by_kind.get(kind, ()) + keys
    # Each of the others subscribes to the sim's state and the planner's action: both start
    # once all who listen can hear them (a viewer, the bridge, is never waited for).
    for kind in task_nodes(task):
        by_kind[kind] = by_kind.get(kind, ()) + (f"task.start_subscribers:={int(trainer) + len(task_nodes(task)) - 1}",)
    if trainer and explore:  # Alg. 1: the data a trainer learns from comes from an exploring planner
        by_kind["planner"] = by_kind.get("planner", ()) + ("task.explore:=true",)
    if trainer and fleet:  # one trainer records every robot and publishes each model to all
        by_kind[TRAINER] = by_kind.get(TRAINER, ()) + (f"trainer.robots:={json.dumps(list(fleet))}",)
    overrides = {name: (f"task.name:={json.dumps(task.name)}",) + settings + by_kind.get(name.rpartition("/")[2], ())
                 for name in names}
    with tempfile.TemporaryDirectory(prefix="loop-ros-up-") as tmp:
        summary_dir = Path(tmp)
        start = time.monotonic()
        quota = CpuQuota(trainer_cpus) if trainer and trainer_cpus else None
        try:
            env = node_environment(domain_id)
            with signals_received() as received:
                processes = start_nodes(names, params, summary_dir, env, overrides, quota, options)
                failure = (bring_up_in_order(processes, env, summary_dir, received, options) if options.autostart
                           else None)
                if failure is None:
                    reason, signum, node_exited = supervise(processes, duration, received)
                else:  # a signal during bring-up is a stop asked for, anything else a failed run
                    reason, signum, node_exited = failure, received[0] if received else signal.SIGINT, not received
                outlived = stop_nodes(processes, signum)
        finally:
            if quota is not None:
                quota.close()
        summary = merged_summary(task.name, reason, time.monotonic() - start, processes, summary_dir)
    summary["outlived_stop_signal"] = sorted(outlived)
    return summary, stopped_cleanly(summary["exit_codes"], signum, node_exited, outlived)


def stopped_cleanly(exit_codes: dict[str, int], signum: int, node_exited: bool, outlived: set[str]) -> bool:
    """Whether a run stopped as asked: no node exited on its own, and each exited 0 (however long it
    took), or by ``signum`` itself within the grace period: a node dies by the stop signal at once only
    while it is still starting, before ``run_node`` catches it (stopped during bring-up, it never ran).
    One that outlived the grace period (``stop_nodes``) and then died by a signal hung while stopping."""
    return not node_exited and all(code == 0 or (code == -signum and name not in outlived)
                                   for name, code in exit_codes.items())
