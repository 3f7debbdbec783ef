"""MuJoCo RC car env (``rc_car.xml``) with a gymnasium-like API; reward and cost from ``RcCarTask``.

Episodes: ``episode_steps`` control steps (default 500 at 50 Hz = 10 s), then
``truncated``. ``terminated`` when the car rolls over (body up-axis more than 60 deg
from vertical), leaves the ``ARENA_RADIUS`` (3 m) arena, or the physics goes non-finite.
Resets put the car near the 1 m circle, pointing counter-clockwise and rolling, with a
seeded random perturbation (see ``reset``). Physics runs at the XML's 2 ms timestep;
each control step holds the action for ``control_dt / timestep`` physics steps.
With ``tyres`` (``brush_tyres.BrushTyres``, the ``rc_car_drift`` task) the tyre forces are Drift-v0's
brush model, applied each physics step, and the throttle commands the rear wheels' speed
(``_use_brush_tyres``).
"""
from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

from loop_ros.core.config import SafetyConfig
from loop_ros.sim.brush_tyres import BrushTyres, planar_wrench

MODEL_PATH = Path(__file__).with_name("rc_car.xml")
ARENA_RADIUS = 3.0
MIN_UPRIGHT = 0.5
"""cos(60 deg): below this z-component of the body up-axis the car has rolled over."""
START_HEIGHT = 0.0498
"""Chassis (CoM) height at rest on the floor, so a reset does not drop the car."""
START_RADIUS_JITTER = 0.1
START_HEADING_JITTER = 0.2
START_SPEED_FRACTION = (0.0, 1.0)
"""Initial forward speed, as a fraction range of the target speed."""


class RcCarEnv:
    """Throttle/steer (clipped to the task's action bounds) -> 6-D ``RcCarTask`` observation, at
    ``1 / control_dt`` Hz."""

    def __init__(self, task, episode_steps: int = 500, control_dt: float = 0.02, seed: int | None = None,
                 safety: SafetyConfig | None = None, tyres: BrushTyres | None = None):
        self.task = task  # an RcCarTask: its target speed and circle, reward and observation
        self.safety = safety or SafetyConfig()
        self.tyres = tyres
        self.episode_steps = int(episode_steps)
        self.model = mujoco.MjModel.from_xml_path(str(MODEL_PATH))
        self.data = mujoco.MjData(self.model)
        self.frame_skip = int(round(control_dt / self.model.opt.timestep))
        if self.frame_skip < 1 or not np.isclose(self.frame_skip * self.model.opt.timestep, control_dt):
            raise ValueError(f"control_dt {control_dt} is not a multiple of the {self.model.opt.timestep} s timestep")
        self.control_dt = float(control_dt)
        self._steer_ids = [self.model.actuator(name).id for name in ("steer_left", "steer_right")]
        self._drive_ids = [self.model.actuator(name).id for name in ("drive_left", "drive_right")]
        self.max_steer = float(self.model.actuator_ctrlrange[self._steer_ids[0], 1])
        self._rear_spin_dofs = [self.model.joint(name).dofadr[0] for name in ("rear_left_spin", "rear_right_spin")]
        self._front_spin_dofs = [self.model.joint(name).dofadr[0] for name in ("front_left_spin", "front_right_spin")]
        self.wheel_radius = float(self.model.geom("rear_left_tyre").size[0])
        if tyres is not None:
            self._use_brush_tyres()
        self._rng = np.random.default_rng(seed)
        self._steps = 0
        self._obs = self.reset()

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start rolling near the circle: angle on it uniform, radius R +- 0.1 m, heading along
        the counter-clockwise tangent +- 0.2 rad, forward speed uniform in [0, target_speed],
        wheels rolling at that speed. ``seed`` re-seeds the generator (else it continues)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        rng, radius = self._rng, self.task.circle_radius
        angle = rng.uniform(-np.pi, np.pi)
        distance = radius + rng.uniform(-START_RADIUS_JITTER, START_RADIUS_JITTER)
        yaw = angle + 0.5 * np.pi + rng.uniform(-START_HEADING_JITTER, START_HEADING_JITTER)
        speed = self.task.target_speed * rng.uniform(*START_SPEED_FRACTION)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[0:7] = [distance * np.cos(angle), distance * np.sin(angle), START_HEIGHT,
                               np.cos(0.5 * yaw), 0.0, 0.0, np.sin(0.5 * yaw)]
        self.data.qvel[0:2] = speed * np.cos(yaw), speed * np.sin(yaw)
        self.data.qvel[self._rear_spin_dofs + self._front_spin_dofs] = speed / self.wheel_radius
        mujoco.mj_forward(self.model, self.data)
        self._steps = 0
        self._obs = self.observation()
        return self._obs.copy()

    def step(self, action) -> tuple[np.ndarray, float, float, bool, bool, dict]:
        """One control step: ``(obs, reward, cost, terminated, truncated, info)``.

        Non-finite actions become the task's safe action; the rest are clipped to [-1, 1].
        """
        action = np.asarray(action, dtype=float).reshape(self.task.act_dim)
        if not np.all(np.isfinite(action)):
            action = self.task.safe_action()
        action = np.clip(action, self.task.action_low, self.task.action_high)
        throttle, steer = action
        self.data.ctrl[self._steer_ids] = steer * self.max_steer
        if self.tyres is None:
            self.data.ctrl[self._drive_ids] = throttle
            mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        else:
            for _ in range(self.frame_skip):
                self._apply_tyre_forces(throttle * self.max_wheel_speed)
                mujoco.mj_step(self.model, self.data)
        self._steps += 1

        obs = self.observation()
        reward = float(self.task.reward(self._obs, action, obs))
        cost = float(self.task.cost(obs, self.safety))
        self._obs = obs
        terminated = self._crashed(obs)
        truncated = not terminated and self._steps >= self.episode_steps
        return obs.copy(), reward, cost, terminated, truncated, self._info(obs)

    def _use_brush_tyres(self) -> None:
        """Drift-v0's tyres (``brush_tyres.py``): the wheels' contacts turn frictionless (they carry
        the weight, nothing else; a wheel's priority makes its condim the contact's), and each physics
        step gets the tyres' forces applied at the car's centre of mass, so they neither roll nor pitch
        the car: Drift-v0's car is planar. The loads are the static axle loads, as Drift-v0's. The
        throttle commands the rear wheels' tread speed, as Drift-v0's action does, up to the motor's
        free speed (6 m/s): zero throttle locks them. The drive motors get no command; the wheels'
        spin is only drawn, not simulated."""
        model = self.model
        for name in ("front_left_tyre", "front_right_tyre", "rear_left_tyre", "rear_right_tyre"):
            model.geom_condim[model.geom(name).id] = 1
        self._chassis = model.body("chassis").id
        self._steer_qpos = [model.joint(name).qposadr[0] for name in ("steer_left", "steer_right")]
        drive = self._drive_ids[0]
        self.max_wheel_speed = float(model.actuator_gainprm[drive, 0] / -model.actuator_biasprm[drive, 2]
                                     * self.wheel_radius)
        front_axle = float(model.body("front_left_knuckle").pos[0])
        rear_axle = float(-model.body("rear_left_wheel").pos[0])
        mass = float(mujoco.mj_getTotalmass(model))
        weight = mass * float(np.linalg.norm(model.opt.gravity))
        wheelbase = front_axle + rear_axle
        inertia = np.zeros((model.nv, model.nv))
        mujoco.mj_forward(model, self.data)
        mujoco.mj_fullM(model, self.data, inertia)
        self.car = {"mass": mass, "yaw_inertia": float(inertia[5, 5]), "front_axle": front_axle,
                    "rear_axle": rear_axle, "front_load": weight * rear_axle / wheelbase,
                    "rear_load": weight * front_axle / wheelbase}
        self._wrench = np.zeros(3)

    def _apply_tyre_forces(self, wheel_speed: float) -> None:
        _, _, yaw, vx, vy, yaw_rate = self.pose()
        cos_yaw, sin_yaw = np.cos(yaw), np.sin(yaw)
        steer = float(np.mean(self.data.qpos[self._steer_qpos]))
        force_x, force_y, torque = planar_wrench(self.tyres, self.car, cos_yaw * vx + sin_yaw * vy,
                                                 -sin_yaw * vx + cos_yaw * vy, yaw_rate, steer, wheel_speed)
        force = np.array([cos_yaw * force_x - sin_yaw * force_y, sin_yaw * force_x + cos_yaw * force_y, 0.0])
        self._wrench[2] = torque
        self.data.qfrc_applied[:] = 0.0
        mujoco.mj_applyFT(self.model, self.data, force, self._wrench, self.data.subtree_com[self._chassis],
                          self._chassis, self.data.qfrc_applied)

    def pose(self) -> tuple[float, float, float, float, float, float]:
        """(x, y, yaw, vx_world, vy_world, yaw_rate) of the CoM: what the ROS sim node publishes."""
        qpos, qvel = self.data.qpos, self.data.qvel
        w, qx, qy, qz = qpos[3:7]
        yaw = np.arctan2(2.0 * (w * qz + qx * qy), 1.0 - 2.0 * (qy * qy + qz * qz))
        # Free-joint angular velocity is in the body frame; the yaw rate is its world-z part.
        angular_world = np.zeros(3)
        mujoco.mju_rotVecQuat(angular_world, qvel[3:6], qpos[3:7])
        return (float(qpos[0]), float(qpos[1]), float(yaw), float(qvel[0]), float(qvel[1]),
                float(angular_world[2]))

    def observation(self) -> np.ndarray:
        """The task observation ``(6,)`` of the current state (see ``rc_car.OBS_NAMES``)."""
        return self.task.obs_from_pose(*self.pose())

    def upright(self) -> float:
        """z-component of the body's up-axis: 1 flat, 0 on its side."""
        _, qx, qy, _ = self.data.qpos[3:7]
        return float(1.0 - 2.0 * (qx * qx + qy * qy))

    def _crashed(self, obs: np.ndarray) -> bool:
        if not (np.all(np.isfinite(self.data.qpos)) and np.all(np.isfinite(self.data.qvel))):
            return True
        return bool(np.hypot(obs[0], obs[1]) > ARENA_RADIUS or self.upright() < MIN_UPRIGHT)

    def _info(self, obs: np.ndarray) -> dict:
        x, y, yaw, vx, vy, yaw_rate = self.pose()
        return {"x": x, "y": y, "yaw": yaw, "vx": vx, "vy": vy, "yaw_rate": yaw_rate,
                "speed": float(np.hypot(vx, vy)), "v_long": float(obs[2]), "v_lat": float(obs[3]),
                "step": self._steps}
