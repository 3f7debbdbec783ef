"""Can our MuJoCo car be made to need a drift? A planner with the true simulator as its model
(bench/RESULTS.md, "A drift task"): no learning, so it shows what planning at a horizon can reach with
a perfect model.

Each control step, CEM over throttle/steer sequences of ``--horizon`` steps rolls the car's own MuJoCo
model out from the env's exact state (``mujoco.rollout``) and scores them with the rc_car reward at
``--target`` m/s, minus ``KEEP_OUT_PENALTY`` per step beyond the 1.2 m keep-in circle and
``CRASH_PENALTY`` for leaving the arena or rolling over. The first action of the final mean is applied.
A short horizon with no terminal value is the PETS-restricted situation; a long one stands in for what
a terminal value adds. Per episode it reports the return, the speed, the radius error and the body slip
angle atan2(v_lat, v_long) while on the circle (|d - R| <= 0.2 m).

    .venv/bin/python bench/rc_car_drift/oracle_drift.py --target 2.0 2.6 3.0 --horizon 10 40 \\
        --episodes 1 --steps 250 --json bench/rc_car_drift/oracle.json
"""
import argparse
import json
import time
from pathlib import Path

import mujoco
import numpy as np
from mujoco import rollout
from PIL import Image, ImageDraw

from loop_ros.bench.curves import COLOURS
from loop_ros.core.config import SafetyConfig
from loop_ros.core.tasks.rc_car import RcCarTask, tangential_velocity
from loop_ros.sim.rc_car_env import ARENA_RADIUS, MIN_UPRIGHT

KEEP_OUT_PENALTY = 10.0
CRASH_PENALTY = 1000.0
ON_CIRCLE_M = 0.2
STATE_SPEC = mujoco.mjtState.mjSTATE_FULLPHYSICS
SIZE, METRES = 640, 3.2  # the lap picture shows x and y in [-1.6, 1.6] m
SLIP_FOR_DARKEST = 30.0


class TrueModelCem:
    """CEM over action sequences, scored by rolling out the env's MuJoCo model itself."""

    def __init__(self, env, horizon: int, population: int, iterations: int, elites: int, sigma: float, seed: int):
        self.env, self.horizon = env, horizon
        self.population, self.iterations, self.elites, self.sigma = population, iterations, elites, sigma
        self.rng = np.random.default_rng(seed)
        self.mean = np.zeros((horizon, 2))
        self.datas = [mujoco.MjData(env.model) for _ in range(2)]
        self.state = np.empty(mujoco.mj_stateSize(env.model, STATE_SPEC))

    def act(self, obs: np.ndarray) -> np.ndarray:
        mujoco.mj_getState(self.env.model, self.env.data, self.state, STATE_SPEC)
        mean, std = self.mean, np.full_like(self.mean, self.sigma)
        for _ in range(self.iterations):
            actions = np.clip(mean + std * self.rng.standard_normal((self.population, *mean.shape)), -1.0, 1.0)
            actions[0] = mean  # the warm start is always a candidate
            scores = self.score(obs, actions)
            elite = actions[np.argsort(scores)[-self.elites:]]
            mean, std = elite.mean(axis=0), elite.std(axis=0) + 0.05
        self.mean = np.concatenate([mean[1:], mean[-1:]])
        return mean[0]

    def score(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        env = self.env
        ctrl = np.zeros((len(actions), self.horizon * env.frame_skip, env.model.nu))
        held = np.repeat(actions, env.frame_skip, axis=1)
        ctrl[..., env._drive_ids] = held[..., 0:1]
        ctrl[..., env._steer_ids] = held[..., 1:2] * env.max_steer
        states, _ = rollout.rollout(env.model, self.datas, self.state[None], ctrl)
        states = states[:, env.frame_skip - 1::env.frame_skip]  # after each control step
        nq = env.model.nq
        qpos, qvel = states[..., 1:1 + nq], states[..., 1 + nq:1 + nq + env.model.nv]
        next_obs = observations(env.task, qpos, qvel)
        prev_obs = np.concatenate([np.broadcast_to(obs, (len(actions), 1, 6)), next_obs[:, :-1]], axis=1)
        reward = env.task.reward(prev_obs, actions, next_obs)
        distance = np.hypot(next_obs[..., 0], next_obs[..., 1])
        upright = 1.0 - 2.0 * (qpos[..., 4] ** 2 + qpos[..., 5] ** 2)
        crashed = np.maximum.accumulate((distance > ARENA_RADIUS) | (upright < MIN_UPRIGHT), axis=1)
        reward = np.where(crashed, 0.0, reward - KEEP_OUT_PENALTY * (distance > env.safety.keep_in_radius))
        return reward.sum(axis=1) - CRASH_PENALTY * crashed[:, -1]


def observations(task: RcCarTask, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
    """The task observation of MuJoCo states, as ``RcCarEnv.pose`` computes it for one."""
    w, qx, qy, qz = (qpos[..., i] for i in range(3, 7))
    yaw = np.arctan2(2.0 * (w * qz + qx * qy), 1.0 - 2.0 * (qy * qy + qz * qz))
    wx, wy, wz = qvel[..., 3], qvel[..., 4], qvel[..., 5]  # body frame
    yaw_rate = 2.0 * (qx * qz - w * qy) * wx + 2.0 * (qy * qz + w * qx) * wy + (1.0 - 2.0 * (qx * qx + qy * qy)) * wz
    return task.obs_from_pose(qpos[..., 0], qpos[..., 1], yaw, qvel[..., 0], qvel[..., 1], yaw_rate)


def episode(env, act, seed: int) -> dict:
    """One episode from ``env.reset(seed)`` driven by ``act(obs) -> action``: its statistics, and its
    path (x, y, |slip| in degrees, tangential speed per step) under ``"path"``. The means are over the steps
    on the circle, except ``episode_radius_error_m``: over every step. ``mean_steer`` is the commanded steer
    in [-1, 1], + into the counter-clockwise turn: below 0 is countersteer."""
    obs = env.reset(seed=seed)
    total, violations, path, all_radius_errors = 0.0, 0, [], []
    slips, radius_errors, speeds, steers = [], [], [], []
    for steps in range(1, env.episode_steps + 1):
        action = np.asarray(act(obs), dtype=float)
        obs, reward, cost, terminated, truncated, _ = env.step(action)
        total += reward
        violations += cost > 0.0
        slip = abs(np.degrees(np.arctan2(obs[3], obs[2])))
        speed = float(tangential_velocity(obs))
        path.append([round(float(obs[0]), 3), round(float(obs[1]), 3), round(float(slip), 1), round(speed, 3)])
        radius_error = abs(np.hypot(obs[0], obs[1]) - env.task.circle_radius)
        all_radius_errors.append(radius_error)
        if radius_error <= ON_CIRCLE_M:
            slips.append(slip)
            radius_errors.append(radius_error)
            speeds.append(speed)
            steers.append(float(np.clip(action[1], -1.0, 1.0)))
        if terminated or truncated:
            break
    described = {"mean_abs_slip_deg": slips, "mean_radius_error_m": radius_errors, "mean_tangential_speed": speeds,
                 "episode_radius_error_m": all_radius_errors, "mean_steer": steers}
    return {"seed": seed, "return": round(total, 1), "steps": steps, "crashed": bool(terminated),
            "violation_ticks": int(violations), "on_circle_fraction": round(len(slips) / steps, 3),
            **{key: round(float(np.mean(values)), 3) if values else None for key, values in described.items()},
            "p90_abs_slip_deg": round(float(np.percentile(slips, 90)), 1) if slips else None, "path": path}


def draw_laps(paths: dict[str, list], path: Path) -> None:
    """One episode's path per name on a PNG: the 1 m circle and the 1.2 m keep-in circle in grey, each
    path in its colour, darker where |slip| is larger."""
    image = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(image)

    def pixel(x: float, y: float) -> tuple[float, float]:
        return (SIZE / 2 + x / METRES * SIZE, SIZE / 2 - y / METRES * SIZE)

    for radius in (1.0, 1.2):
        (x0, y0), (x1, y1) = pixel(-radius, radius), pixel(radius, -radius)
        draw.ellipse((x0, y0, x1, y1), outline=(160, 160, 160))
    for k, (name, steps) in enumerate(paths.items()):
        colour = np.array(COLOURS[k % len(COLOURS)])
        for (xa, ya, *_), (xb, yb, slip, *_) in zip(steps, steps[1:]):
            shade = 1.0 - 0.6 * min(slip, SLIP_FOR_DARKEST) / SLIP_FOR_DARKEST
            draw.line((pixel(xa, ya), pixel(xb, yb)), fill=tuple(int(c) for c in colour * shade), width=2)
        draw.text((10, 10 + 15 * k), name, fill=tuple(int(c) for c in colour))
    draw.text((10, SIZE - 20), f"darker: larger |slip| (darkest at {SLIP_FOR_DARKEST:g} deg)", fill="black")
    image.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, nargs="+", default=[2.0, 2.6])
    parser.add_argument("--horizon", type=int, nargs="+", default=[10, 40])
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--png", help="the first episode of each (target, horizon), drawn (draw_laps)")
    args = parser.parse_args()
    rows = []
    for target in args.target:
        task = RcCarTask(target_speed=target)
        env = task.make_env(SafetyConfig(), episode_steps=args.steps)
        for horizon in args.horizon:
            for seed in range(args.episodes):
                planner = TrueModelCem(env, horizon, args.population, args.iterations, elites=8, sigma=0.5, seed=seed)
                started = time.perf_counter()
                row = {"target": target, "horizon": horizon, **episode(env, planner.act, seed),
                       "seconds": round(time.perf_counter() - started, 1)}
                print({key: value for key, value in row.items() if key != "path"}, flush=True)
                rows.append(row)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([{key: value for key, value in row.items() if key != "path"} for row in rows], f, indent=1)
    if args.png:
        draw_laps({f"{row['target']:g} m/s, H {row['horizon']}": row["path"] for row in rows if row["seed"] == 0},
                  Path(args.png))


if __name__ == "__main__":
    main()
