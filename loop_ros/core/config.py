"""Frozen configuration dataclasses: the one source of every setting.

Settings flow one way: a task's params file (ROS 2 params YAML, ``core/params_file.py``) -> node
parameters -> these dataclasses. A parameter is named ``<section>.<field>`` (``arc.horizon``),
and ``test_config.py`` checks that every YAML key maps to a field and back.
Each field's docstring is the text of its ROS parameter descriptor and README row.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import math
import numbers
import re
import typing
from dataclasses import dataclass
from typing import Any


class TerminalValue(str, enum.Enum):
    """The value ARC adds after its H model steps: ``ArcConfig.terminal``, or NONE where
    ``use_terminal_value`` is off (``core.arc.terminal_kind``).

    A str: the members equal (and hash as) the strings users write in YAML and parameters.
    """

    DISCOUNTED = "discounted"  # gamma^H Q(s_H, pi(s_H)): Eq. 3 with the critic as V
    AUTHORS = "authors"  # Q(s_{H-1}, a_{H-1}) in place of r_{H-1}, undiscounted (Alg. 3 l.20, the authors' code)
    NONE = "none"  # no value (arc.use_terminal_value false: PETS-restricted, cem)

    def __str__(self) -> str:
        return self.value  # 'discounted', not 'TerminalValue.DISCOUNTED', in messages and README

    __hash__ = str.__hash__  # a plain 'discounted' and the member are one dict key (fused-graph caches)


TERMINAL_CONVENTIONS = (TerminalValue.DISCOUNTED, TerminalValue.AUTHORS)
WEIGHTINGS = ("softmax", "elite")
CRR_WEIGHTINGS = ("exp", "binary")
INFEASIBLE_FALLBACKS = ("min_cost", "brake")
MAX_ROBOTS = 64
"""trainer.robots: a fleet larger than this is not what one trainer's process is for."""
CONTROLLERS = ("arc", "safe-arc", "actor", "cem", "mppi", "loop-cem")
ALGOS = {"loop": "arc", "safe-loop": "safe-arc", "sac": "actor", "pets": "cem", "loop-cem": "loop-cem"}
"""Training algorithm -> the planner controller it acts with (one of ``CONTROLLERS``)."""

# Bounded work of one plan (a parameter edit must not be able to exhaust memory or stall the host).
# The largest array of a plan is its noise (arc.draw_plan_noise): I*H*K*P*N*S float32, i.e.
# 4 * MAX_PLAN_ROLLOUT_STEPS * K * S bytes at the ceiling. The paper's setting (H3 N100 P4, 5
# iterations) is 6_000 per member and config/rc_car.yaml's (H10 N100 P1, 2 it.) 2_000; the ceiling
# allows about 17x the paper's. With K <= MAX_ENSEMBLE_SIZE = 16 members and S = 100 state dims the
# noise is at most 640 MB (2.6 GB peak while drawn, measured); with the paper's K5, S17 it is 34 MB.
# Time scales with P*N*H*I*K: the paper-halfcheetah preset takes 52 ms per plan on 2 cores
# (bench/RESULTS.md), so a plan at the ceiling takes about 0.9 s at K=5 and 2.8 s at K=16.
MAX_PLAN_ROLLOUT_STEPS = 100_000
"""Ceiling on arc.particles * arc.population * arc.horizon * arc.iterations (rollout steps per member)."""
MAX_ENSEMBLE_SIZE = 16
"""Most ensemble members a model (ensemble.ensemble_size, a bundle's K) may have."""
MAX_HORIZON, MAX_POPULATION, MAX_PARTICLES, MAX_ITERATIONS = 200, 10_000, 100, 100


@dataclass(frozen=True)
class ArcConfig:
    """Actor Regularized Control (Alg. 3); defaults are the paper's Table 3."""

    horizon: int = 3
    """H: planning horizon in control steps (<= 200; P*N*H*iterations <= 100000)."""
    population: int = 100
    """N: candidate action sequences per iteration (<= 10000; P*N*H*iterations <= 100000)."""
    particles: int = 4
    """P: particles per ensemble member (a particle stays with its member, TS-inf; <= 100; P*N*H*iterations <= 100000)."""
    iterations: int = 5
    """n_ARC: iterative importance sampling iterations per plan (<= 100; P*N*H*iterations <= 100000)."""
    beta: float = 0.05
    """Mixture ratio: round(beta*N) candidates come from rolling the actor through the model."""
    eta: float = 1.0
    """Softmax temperature of the importance weights exp(score/eta)."""
    alpha_mean: float = 1.0
    """Mean smoothing: mu <- alpha_mean*mu_new + (1-alpha_mean)*mu (paper 0.1, authors' code 1.0)."""
    alpha_var: float = 0.9
    """Variance smoothing: var <- alpha_var*var_new + (1-alpha_var)*var (paper 0.1, authors' code 0.9)."""
    sigma: float = 0.5
    """Initial std of the Gaussian prior as a fraction of half the action range (0.5 -> (high-low)/4)."""
    gamma: float = 0.99
    """Discount of the H-step return and of the constraint cost."""
    beta_pess: float = 0.0
    """Pessimism: score = mean over K*P - beta_pess * std over the K member means (0 online)."""
    terminal: str = "discounted"
    """'discounted': sum_{t<H} g^t r_t + g^H Q(s_H, pi(s_H)); 'authors': undiscounted sum_{t<H-1} r_t + Q(s_{H-1}, a_{H-1})."""
    use_terminal_value: bool = True
    """Add the terminal Q-value to the return (False: PETS-restricted)."""
    weighting: str = "softmax"
    """'softmax': importance weights (ARC/MPPI); 'elite': uniform weights over the top n_elites (CEM)."""
    n_elites: int = 10
    """Elites kept by the 'elite' weighting (at most the population)."""

    def __post_init__(self) -> None:
        _check_finite(self)
        _check(self.horizon >= 1, "arc.horizon must be >= 1")
        _check(self.population >= 2, "arc.population must be >= 2")
        _check(self.particles >= 1, "arc.particles must be >= 1")
        _check(self.iterations >= 1, "arc.iterations must be >= 1")
        _check(self.horizon <= MAX_HORIZON, f"arc.horizon must be <= {MAX_HORIZON}")
        _check(self.population <= MAX_POPULATION, f"arc.population must be <= {MAX_POPULATION}")
        _check(self.particles <= MAX_PARTICLES, f"arc.particles must be <= {MAX_PARTICLES}")
        _check(self.iterations <= MAX_ITERATIONS, f"arc.iterations must be <= {MAX_ITERATIONS}")
        steps = self.particles * self.population * self.horizon * self.iterations
        _check(steps <= MAX_PLAN_ROLLOUT_STEPS,
               f"arc.particles * population * horizon * iterations must be <= {MAX_PLAN_ROLLOUT_STEPS} "
               f"(the work of one plan per ensemble member), got {steps}")
        _check(0.0 <= self.beta <= 1.0, "arc.beta must be in [0, 1]")
        _check(self.eta > 0.0, "arc.eta must be > 0")
        _check(0.0 < self.alpha_mean <= 1.0, "arc.alpha_mean must be in (0, 1]")
        _check(0.0 < self.alpha_var <= 1.0, "arc.alpha_var must be in (0, 1]")
        _check(self.sigma > 0.0, "arc.sigma must be > 0")
        _check(0.0 < self.gamma <= 1.0, "arc.gamma must be in (0, 1]")
        _check(self.beta_pess >= 0.0, "arc.beta_pess must be >= 0")
        _check(self.terminal in TERMINAL_CONVENTIONS,
               f"arc.terminal must be one of {tuple(map(str, TERMINAL_CONVENTIONS))} "
               "(no terminal value: arc.use_terminal_value false)")
        object.__setattr__(self, "terminal", TerminalValue(self.terminal))  # the enum from here on (frozen)
        _check(self.weighting in WEIGHTINGS, f"arc.weighting must be one of {WEIGHTINGS}")
        _check(self.n_elites >= 1, "arc.n_elites must be >= 1")

    @property
    def n_actor(self) -> int:
        """Number of actor-prior candidates, round(beta*N)."""
        return int(round(self.beta * self.population))


@dataclass(frozen=True)
class SafetyConfig:
    """safeARC (Alg. 4) and the constraint geometry; all live-editable."""

    enabled: bool = False
    """Plan with safeARC (worst-case cost constraint) instead of ARC."""
    d0: float = 0.0
    """Constraint threshold: a candidate is feasible when its worst-case discounted cost <= d0."""
    min_safe: int = 5
    """m: fewer feasible candidates than this -> weight all by softmax(-cost/eta_cost)."""
    eta_cost: float = 1.0
    """Temperature of the cost weights used while too few candidates are feasible."""
    fallback: str = "min_cost"
    """No candidate feasible after all iterations: 'min_cost' (the mean weighted by softmax(-cost/eta_cost)) or 'brake'."""
    keep_in_radius: float = 1.2
    """Keep-in circle radius (m) around the origin; cost 1 while outside. <= 0 disables it."""
    obstacles: tuple[float, ...] = ()
    """Circular obstacles as a flat list x0, y0, r0, x1, y1, r1, ... (m); cost 1 while inside one."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "obstacles", tuple(float(v) for v in self.obstacles))
        _check_finite(self)  # a NaN radius or obstacle coordinate would silently drop its constraint term
        _check(self.d0 >= 0.0, "safety.d0 must be >= 0")
        _check(self.min_safe >= 1, "safety.min_safe must be >= 1")
        _check(self.eta_cost > 0.0, "safety.eta_cost must be > 0")
        _check(self.fallback in INFEASIBLE_FALLBACKS, f"safety.fallback must be one of {INFEASIBLE_FALLBACKS}")
        _check(len(self.obstacles) % 3 == 0, "safety.obstacles must hold x, y, r triples")
        _check(all(r > 0 for r in self.obstacles[2::3]), "safety.obstacles radii must be > 0")


@dataclass(frozen=True)
class EnsembleConfig:
    """Probabilistic dynamics ensemble (paper Table 2, Appendix C.1)."""

    ensemble_size: int = 5
    """Members trained (at most 16)."""
    num_elites: int = 5
    """Members with the lowest holdout loss kept for planning (K of ARC)."""
    hidden: tuple[int, ...] = (200, 200, 200, 200)
    """Hidden layer widths of each member."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 5e-5
    """Adam weight decay."""
    batch_size: int = 256
    """Minibatch size."""
    holdout_ratio: float = 0.2
    """Fraction of transitions held out for early stopping and elite selection."""
    max_epochs: int = 200
    """Upper bound on epochs per fit."""
    patience: int = 5
    """Epochs without holdout improvement (> 1 %) before stopping; the best weights are restored."""
    update_every: int = 250
    """K_m: environment steps between ensemble refits."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        _check_finite(self)
        _check(self.ensemble_size <= MAX_ENSEMBLE_SIZE, f"ensemble.ensemble_size must be <= {MAX_ENSEMBLE_SIZE}")
        _check(1 <= self.num_elites <= self.ensemble_size, "ensemble.num_elites must be in [1, ensemble_size]")
        _check(0.0 < self.holdout_ratio < 1.0, "ensemble.holdout_ratio must be in (0, 1)")


@dataclass(frozen=True)
class SacConfig:
    """Soft actor-critic (Appendix C.2): twin Q, learned temperature, tanh-Gaussian actor."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor and critics."""
    lr: float = 3e-4
    """Adam learning rate of actor, critics and temperature."""
    batch_size: int = 256
    """Minibatch size."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak factor of the target critics."""
    init_alpha: float = 0.2
    """Initial temperature."""
    target_entropy: float = 0.0
    """Target entropy; 0 means -dim(A)."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        _check_finite(self)
        _check(0.0 < self.tau <= 1.0, "sac.tau must be in (0, 1]")


@dataclass(frozen=True)
class CrrConfig:
    """Critic Regularized Regression (Wang et al. 2020), the offline learner (core/crr.py); defaults are the paper's."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor and critics."""
    lr: float = 3e-4
    """Adam learning rate of actor and critics."""
    batch_size: int = 256
    """Minibatch size."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak factor of the target critics."""
    weighting: str = "exp"
    """Actor weight of a dataset action with advantage A: 'exp' min(exp(A/temperature), max_weight) or 'binary' 1[A > 0]."""
    temperature: float = 1.0
    """beta: temperature of the 'exp' weights."""
    max_weight: float = 20.0
    """Clip of the 'exp' weights."""
    advantage_samples: int = 4
    """m: actor samples averaged for the state value in the advantage and in the critic target."""
    steps: int = 100_000
    """Gradient steps of an offline run."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        _check_finite(self)
        _check(self.lr > 0.0, "crr.lr must be > 0")
        _check(self.batch_size >= 1, "crr.batch_size must be >= 1")
        _check(0.0 <= self.gamma <= 1.0, "crr.gamma must be in [0, 1]")
        _check(0.0 < self.tau <= 1.0, "crr.tau must be in (0, 1]")
        _check(self.weighting in CRR_WEIGHTINGS, f"crr.weighting must be one of {CRR_WEIGHTINGS}")
        _check(self.temperature > 0.0, "crr.temperature must be > 0")
        _check(self.max_weight > 0.0, "crr.max_weight must be > 0")
        _check(self.advantage_samples >= 1, "crr.advantage_samples must be >= 1")
        _check(self.steps >= 1, "crr.steps must be >= 1")


@dataclass(frozen=True)
class RosmoConfig:
    """ROSMO (Liu et al. 2023), one-step model lookahead, a continuous-action offline learner (core/rosmo.py)."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of actor and critics."""
    lr: float = 3e-4
    """Adam learning rate of actor and critics."""
    batch_size: int = 256
    """Minibatch size."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak factor of the target critics."""
    lookahead_samples: int = 8
    """N: actions drawn from the actor at each dataset state and stepped through the model (the improvement target's support)."""
    value_samples: int = 4
    """M: actor samples averaged for the state value V(s') of the lookahead and of the critic target."""
    temperature: float = 1.0
    """Temperature of the softmax over the positive lookahead advantages."""
    bc_weight: float = 1.0
    """Weight of the behaviour regularisation -log pi(a|s) of the dataset action (0: none)."""
    steps: int = 100_000
    """Gradient steps of an offline run."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        _check_finite(self)
        _check(self.lr > 0.0, "rosmo.lr must be > 0")
        _check(self.batch_size >= 1, "rosmo.batch_size must be >= 1")
        _check(0.0 <= self.gamma <= 1.0, "rosmo.gamma must be in [0, 1]")
        _check(0.0 < self.tau <= 1.0, "rosmo.tau must be in (0, 1]")
        _check(self.lookahead_samples >= 2,
               "rosmo.lookahead_samples must be >= 2 (an advantage is relative to the samples' mean)")
        _check(self.value_samples >= 1, "rosmo.value_samples must be >= 1")
        _check(self.temperature > 0.0, "rosmo.temperature must be > 0")
        _check(self.bc_weight >= 0.0, "rosmo.bc_weight must be >= 0")
        _check(self.steps >= 1, "rosmo.steps must be >= 1")


@dataclass(frozen=True)
class RuntimeConfig:
    """ONNX Runtime execution of the planner's networks."""

    device: str = "cpu"
    """'cpu' or 'cuda' (CUDAExecutionProvider when available, else CPU with a warning)."""
    intra_op_threads: int = 2
    """Threads of the rollout (dynamics) session; the actor and critic get at most 2, without spinning."""

    def __post_init__(self) -> None:
        _check_finite(self)
        _check(self.device in ("cpu", "cuda"), "runtime.device must be 'cpu' or 'cuda'")
        _check(self.intra_op_threads >= 1, "runtime.intra_op_threads must be >= 1")


@dataclass(frozen=True)
class TaskConfig:
    """Which task and how the loop around it runs."""

    name: str = "rc_car"
    """Task name (``loop_ros.core.tasks.make_task``: rc_car, gym:<EnvId>, an entry point, module:attribute)."""
    control_rate_hz: float = 50.0
    """Planner tick and sim state rate (at most 1000 Hz)."""
    state_timeout_s: float = 0.1
    """A state older than this at a tick is stale: the safe action is published (in (0, 10] s)."""
    controller: str = "arc"
    """arc | safe-arc (arc with safety.enabled forced on) | actor | cem | mppi | loop-cem."""
    seed: int = 0
    """Seed of the planner's noise generator."""
    compensate_delay: bool = True
    """Plan from the state the plan's action will act on: predicted as many control steps ahead as ticks come between the state's arrival and the plan's first use (those already passed when the plan starts, plus the median start-to-use delay of the last 25 plans, one before the first; at most 4), through the actions published or due meanwhile."""
    bundle: str = ""
    """Model bundle directory (relative paths are resolved against the package's share or repo root); empty:
    the task's own default bundle (``models/rc_car`` for the car), or none (the planner brakes until a
    model arrives on the ``model`` topic)."""
    start_subscribers: int = 0
    """The sim's first step and the planner's first tick wait (at most 10 s) until this many subscribers have matched their `state` / `action` (and the planner has a state, and the model it loads at start), so a trainer records from the first tick; `loop-ros up` and the launch file set it."""
    explore: bool = False
    """Execute the first action of a candidate drawn by its weight (Alg. 1's exploration) instead of the plan's mean; `loop-ros up --fresh` turns it on (`--explore` / `--no-explore` choose)."""
    realtime_priority: int = 0
    """SCHED_FIFO priority (1-99) of the planner's planning thread and of its tick's thread, the executor's, which runs its other callbacks too, and of the sim's stepping thread (its executor's; fixed at start): they then run whenever they are ready, ahead of the trainer and every ordinary process; it takes root, CAP_SYS_NICE or `ulimit -r` of at least this (refused: a warning, and the ordinary priority). 0: the ordinary scheduler. With runtime.intra_op_threads 1 the rollout runs in the planning thread."""
    lockstep: bool = False
    """Simulated time in lock-step (fixed at start): the sim steps only on the planner's answer to its latest state (at most control_rate_hz steps a second), the planner answers every state with one plan however long it takes (no deadline, no delay compensation), and the sim publishes `/clock`: the control loop does not depend on the host's speed (the trainer still learns in wall-clock time). Off: real time, the sim and the planner on wall-clock timers (a robot)."""

    def __post_init__(self) -> None:
        _check_finite(self)
        _check(0.0 < self.control_rate_hz <= 1000.0, "task.control_rate_hz must be in (0, 1000]")
        _check(0.0 < self.state_timeout_s <= 10.0, "task.state_timeout_s must be in (0, 10]")
        _check(self.start_subscribers >= 0, "task.start_subscribers must be >= 0")
        _check(0 <= self.realtime_priority <= 99, "task.realtime_priority must be in [0, 99]")
        _check(self.controller in CONTROLLERS, f"task.controller must be one of {CONTROLLERS}")


@dataclass(frozen=True)
class SimConfig:
    """The MuJoCo sim node around the task's environment."""

    episode_steps: int = 500
    """Control steps per episode (500 at 50 Hz = 10 s); the episode then resets."""
    action_timeout_s: float = 0.2
    """With no valid action for this long the sim applies the task's safe action (brake)."""

    def __post_init__(self) -> None:
        _check_finite(self)
        _check(self.episode_steps >= 1, "sim.episode_steps must be >= 1")
        _check(self.action_timeout_s > 0.0, "sim.action_timeout_s must be > 0")


@dataclass(frozen=True)
class TrainerConfig:
    """The trainer: when LOOP learns what (Alg. 1), and its rosbag2 replay buffer (core/replay.py)."""

    seed_steps: int = 1000
    """Transitions before the first ensemble fit and SAC update."""
    updates_per_step: int = 1
    """SAC gradient steps per transition (Alg. 1 l.6: one)."""
    fit_max_seconds: float = 0.0
    """Wall-clock cap of one ensemble fit (0: none; ensemble.max_epochs and patience still apply)."""
    publish_every: int = 0
    """Transitions between model publications besides the one after each ensemble refit (0: after refits only)."""
    refits_per_publish: int = 1
    """A model is published after every n-th ensemble refit: each swap costs the planner host a verify and a
    graph composition."""
    publish_after: int = 0
    """Transitions the node must have trained on before it publishes a model: its replay holds this many and, for an algo that learns values, SAC has made their updates (updates_per_step x (publish_after - seed_steps + 1)), so a shipped model is not replaced by one trained on less, nor by a value function restarted on a large replay."""
    max_model_age_s: float = 60.0
    """Once a model may be published (fitted, publish_after reached), a new one is published at least this often while learning goes on, even with SAC updates still owed (counted in forced_publications; 0: off)."""
    max_backlog: int = 500
    """Transitions waiting for the learner beyond which it stores them all at once and owes their SAC updates (made as time allows, the debt capped by max_owed_updates), so a slow host keeps the replay current."""
    max_fit_share: float = 0.5
    """At most this share of the learner's time goes to ensemble fits: a due fit waits until the time since the last one ended is (1/share - 1) x that fit's duration, so SAC keeps learning on a slow host."""
    max_owed_updates: int = 5000
    """SAC updates owed to stored transitions (a replay loaded at start) are capped at this many, the excess counted in sac_updates_skipped, so catching up ends."""
    gate_episodes: int = 0
    """Simulator episodes each model drives, as the planner would, before it is published; it is published only if it drives there at least as well as the planner's starting bundle, task.bundle (core/model_gate.py: no more crashes, no more steps in violation, its mean return at most gate_return_tolerance below; without a starting bundle every model passes). 0: off (a task without a simulator)."""
    gate_return_tolerance: float = 0.1
    """How far below the starting bundle's mean return (as a share of its magnitude) a gated model's may be."""
    keep_models: int = 0
    """Published bundles also kept in data_dir/models/v<version> (9 digits: v000029750), for rollback and evaluation: -1 all, 0 none, n the newest n (`--fresh` keeps all)."""
    torch_threads: int = 1
    """torch intra-op threads of the trainer node (the sim and the planner need the other cores)."""
    nice: int = 10
    """Niceness added to the trainer node's threads, and to its session's autogroup when it leads the session (as under `loop-ros up`), so the planner and the sim win the CPU."""
    data_dir: str = ""
    """Directory of the replay bags (MCAP); every bag in it is loaded at start. Empty: ~/.ros/loop_ros/<task>/replay, so
    two tasks never share a replay."""
    max_bag_mb: float = 64.0
    """A bag is closed and a new one started after this many MB of messages..."""
    max_bag_seconds: float = 600.0
    """...or after this many seconds."""
    flush_messages: int = 100
    """The open MCAP chunk is written out at this many messages (a crash loses at most the open chunk)..."""
    flush_interval_s: float = 1.0
    """...or once its oldest message is this old."""
    queue_size: int = 10000
    """Messages waiting for the bag writer thread; beyond this new ones are dropped (and counted)."""
    max_gap_s: float = 0.2
    """No transition spans a gap longer than this between the stamps of two states, or uses an action received this long before its state."""
    robots: tuple[str, ...] = ()
    """A fleet on one trainer: the namespaces of the robots it learns from (e.g. [robot0, robot1], relative to the trainer's own); it records each one's state, action and episode topics into one replay, each robot's transitions apart, and publishes every model on each one's model topic. Empty: its own topics (one robot)."""

    def __post_init__(self) -> None:
        _check_finite(self)
        object.__setattr__(self, "robots", tuple(str(name).strip("/") for name in self.robots))
        _check(all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*", name) for name in self.robots),
               "trainer.robots must be ROS namespaces (letters, digits, underscores; not starting with a digit)")
        _check(len(set(self.robots)) == len(self.robots) and len(self.robots) <= MAX_ROBOTS,
               f"trainer.robots must be distinct, at most {MAX_ROBOTS}")
        _check(self.seed_steps >= 2, "trainer.seed_steps must be >= 2")
        _check(self.updates_per_step >= 0, "trainer.updates_per_step must be >= 0")
        _check(self.fit_max_seconds >= 0.0, "trainer.fit_max_seconds must be >= 0")
        _check(self.publish_every >= 0, "trainer.publish_every must be >= 0")
        _check(self.publish_after >= 0, "trainer.publish_after must be >= 0")
        _check(self.refits_per_publish >= 1, "trainer.refits_per_publish must be >= 1")
        _check(self.max_model_age_s >= 0.0, "trainer.max_model_age_s must be >= 0")
        _check(self.max_backlog >= 1, "trainer.max_backlog must be >= 1")
        _check(0.0 < self.max_fit_share <= 1.0, "trainer.max_fit_share must be in (0, 1]")
        _check(self.max_owed_updates >= 0, "trainer.max_owed_updates must be >= 0")
        _check(self.gate_episodes >= 0, "trainer.gate_episodes must be >= 0")
        _check(self.gate_return_tolerance >= 0.0, "trainer.gate_return_tolerance must be >= 0")
        _check(self.keep_models >= -1, "trainer.keep_models must be -1 (all), 0 or a count")
        _check(self.torch_threads >= 1, "trainer.torch_threads must be >= 1")
        _check(0 <= self.nice <= 19, "trainer.nice must be in [0, 19]")
        _check(self.max_bag_mb > 0.0 and self.max_bag_seconds > 0.0, "trainer.max_bag_mb and max_bag_seconds must be > 0")
        _check(self.flush_messages >= 1, "trainer.flush_messages must be >= 1")
        _check(self.flush_interval_s > 0.0, "trainer.flush_interval_s must be > 0")
        _check(self.queue_size >= 1, "trainer.queue_size must be >= 1")
        _check(self.max_gap_s > 0.0, "trainer.max_gap_s must be > 0")


@dataclass(frozen=True)
class FoxgloveConfig:
    """The Foxglove bridge node: a WebSocket server (subprotocol foxglove.sdk.v1) showing what the planner sees and plans."""

    host: str = "127.0.0.1"
    """Address the server binds (loopback: only this machine can connect)."""
    port: int = 8765
    """TCP port of the server (0: a free port, logged at start)."""
    scene_rate_hz: float = 10.0
    """Rate of the 3D scene updates: the car, the planned path, the keep-in circle and obstacles."""
    planner_node: str = "planner"
    """Name of the planner whose parameters the bridge serves (Foxglove's Parameters panel) and whose accepted `safety.*` edits the scene follows; relative to the bridge's namespace, or fully qualified (/...). Fixed at start."""
    record: str = ""
    """MCAP file to record the view into as it is served (every channel, while active; "": none). It is never overwritten: a bridge whose file exists does not start. The recording spans the node's life, through a cleanup and configure. Fixed at start."""

    def __post_init__(self) -> None:
        _check_finite(self)
        _check(bool(self.host), "foxglove.host must not be empty")
        _check(0 <= self.port <= 65535, "foxglove.port must be in [0, 65535]")
        _check(self.scene_rate_hz > 0.0, "foxglove.scene_rate_hz must be > 0")
        _check(bool(self.planner_node.strip("/")), "foxglove.planner_node must not be empty")


@dataclass(frozen=True)
class SecurityConfig:
    """Signed models (core/signing.py): the trainer signs each bundle it publishes on `model`, the planner
    accepts one only with a valid signature from a key it trusts and a version newer than its active model's.
    Fixed at start (read-only)."""

    signing_key: str = ""
    """Path of the trainer's Ed25519 private key PEM (mode 0600); empty: bundles are published unsigned, and planners will refuse them. `loop-ros up` and the launch file set it."""
    trusted_keys: tuple[str, ...] = ()
    """Paths of the Ed25519 public key PEMs whose signatures the planner accepts for bundles from the `model` topic (empty: it refuses them all); a bundle from a local directory the user configured (task.bundle) is trusted without a signature. `loop-ros up` and the launch file set it."""

    def __post_init__(self) -> None:
        _check_finite(self)  # no float fields: for uniformity
        object.__setattr__(self, "trusted_keys", tuple(str(p) for p in self.trusted_keys))
        _check(all(self.trusted_keys), "security.trusted_keys must not hold an empty path")


SECTIONS: dict[str, type] = {
    "arc": ArcConfig,
    "safety": SafetyConfig,
    "ensemble": EnsembleConfig,
    "sac": SacConfig,
    "crr": CrrConfig,
    "rosmo": RosmoConfig,
    "runtime": RuntimeConfig,
    "task": TaskConfig,
    "sim": SimConfig,
    "trainer": TrainerConfig,
    "foxglove": FoxgloveConfig,
    "security": SecurityConfig,
}


class ConfigError(ValueError):
    """A setting out of range; the message says which and why."""


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


@functools.lru_cache(maxsize=None)
def _float_fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """(name, is_tuple) of the fields of ``cls`` annotated ``float`` or ``tuple[float, ...]``."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if hint is float:
            found.append((f.name, False))
        elif typing.get_origin(hint) is tuple and typing.get_args(hint)[:1] == (float,):
            found.append((f.name, True))
    return tuple(found)


def _check_finite(config: Any) -> None:
    """Every float field of a section, and every element of a float tuple, is a finite number.

    A NaN compares False with everything, so a range check alone lets it through (and, e.g., a NaN
    keep-in radius would silently drop the constraint); an infinity disables a timeout.
    """
    cls = type(config)
    section = next((name for name, c in SECTIONS.items() if c is cls), cls.__name__)
    for name, is_tuple in _float_fields(cls):
        value = getattr(config, name)
        items = list(enumerate(value)) if is_tuple else [(None, value)]
        for index, item in items:
            label = f"{section}.{name}" if index is None else f"{section}.{name}[{index}]"
            _check(isinstance(item, numbers.Real), f"{label} must be a number, got {item!r}")
            _check(math.isfinite(item), f"{label} must be finite, got {item!r}")


def controller_arc_config(controller: str, arc: ArcConfig) -> ArcConfig:
    """The planner settings of a named controller; all share ARC's code path.

    arc / safe-arc: as given. mppi: Gaussian prior only. cem: PETS-restricted (elite
    update, no actor, no terminal value). loop-cem: the paper's "no ARC" ablation
    (elite update with terminal value, no actor prior). 'actor' does not plan.
    """
    if controller == "mppi":
        return dataclasses.replace(arc, beta=0.0)
    if controller == "cem":
        return dataclasses.replace(arc, beta=0.0, weighting="elite", use_terminal_value=False)
    if controller == "loop-cem":
        return dataclasses.replace(arc, beta=0.0, weighting="elite")
    return arc


def controller_safety(controller: str, safety: SafetyConfig) -> SafetyConfig:
    """The one answer to "does this controller plan with safeARC's constraint?", used by the
    planner node, ``eval``, ``train`` and ``bench`` alike: always for 'safe-arc', never for
    'actor' (it does not plan), else as ``safety.enabled`` says."""
    enabled = controller == "safe-arc" or (safety.enabled and controller != "actor")
    return safety if enabled == safety.enabled else dataclasses.replace(safety, enabled=enabled)
