"""Drift-v0's brush tyres (``sim/brush_tyres.py``) and the car that rides on them (``rc_car_drift``).

The reference below is Drift-v0's tyre model (``driftgym/envs/model/model.py``, ``BrushTireModel``)
written out literally for one tyre: where its slip and ours agree (driving forward, or rolling freely
faster than ``SLIP_MIN_SPEED``), the forces must be the same.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from loop_ros.core.config import SafetyConfig
from loop_ros.core.tasks import make_task
from loop_ros.core.tasks.rc_car import RcCarTask, obs_from_pose
from loop_ros.sim.brush_tyres import SLIP_MIN_SPEED, BrushTyres, planar_wrench
from loop_ros.sim.rc_car_env import RcCarEnv

TYRES = BrushTyres()
FRONT_LOAD, REAR_LOAD = 12.1, 13.8178  # N, rccar.yml
CAR = {"mass": 2.645, "yaw_inertia": 0.0558, "front_axle": 0.137, "rear_axle": 0.120,
       "front_load": FRONT_LOAD, "rear_load": REAR_LOAD}


def reference_front(alpha: float, load: float, c_alpha=56.4, mu_s=1.37) -> float:
    """Drift-v0's front tyre: lateral force of slip angle ``alpha`` (|alpha| < pi/2)."""
    alpha_sliding = math.atan(3 * mu_s * load / c_alpha)
    if abs(alpha) > alpha_sliding:
        return -mu_s * load * math.copysign(1.0, alpha)
    t = math.tan(alpha)
    return (-c_alpha * t + c_alpha**2 / (3 * mu_s * load) * abs(t) * t
            - c_alpha**3 / (27 * mu_s**2 * load**2) * t**3)


def reference_rear(u: float, wheel_speed: float, alpha: float, load: float,
                   c_x=103.94, c_alpha=56.4, mu_s=1.37, mu_k=1.96) -> tuple[float, float]:
    """Drift-v0's rear tyre while driving forward (wheel_speed > u > 0)."""
    k = (wheel_speed - u) / abs(u)
    gamma = math.sqrt(c_x**2 * (k / (1 + k))**2 + c_alpha**2 * (math.tan(alpha) / (1 + k))**2)
    if gamma <= 3 * mu_s * load:
        force = gamma - gamma**2 / (3 * mu_s * load) + gamma**3 / (27 * mu_s**2 * load**2)
    else:
        force = mu_k * load
    return c_x / gamma * (k / (1 + k)) * force, -c_alpha / gamma * (math.tan(alpha) / (1 + k)) * force


def test_the_rear_tyre_is_drift_v0s_while_driving():
    rng = np.random.default_rng(0)
    u = rng.uniform(SLIP_MIN_SPEED, 4.0, 500)
    wheel_speed = u + rng.uniform(0.0, 3.0, 500)
    v = rng.uniform(-2.0, 2.0, 500)
    fx, fy = TYRES.rear(u, v, wheel_speed, REAR_LOAD)
    expected = np.array([reference_rear(a, w, math.atan2(b, a), REAR_LOAD) for a, b, w in zip(u, v, wheel_speed)])
    np.testing.assert_allclose(np.c_[fx, fy], expected, rtol=1e-9, atol=1e-9)
    assert np.any(np.hypot(fx, fy) > 1.5 * REAR_LOAD)  # the draw reaches full slides, not only grip


def test_the_front_tyre_is_drift_v0s_rolling_freely():
    rng = np.random.default_rng(1)
    u = rng.uniform(SLIP_MIN_SPEED, 4.0, 500) * rng.choice([-1.0, 1.0], 500)
    v = rng.uniform(-3.0, 3.0, 500)
    fx, fy = TYRES.front(u, v, FRONT_LOAD)
    # Drift-v0 folds a backwards slip angle into (-pi/2, pi/2) keeping its sign: it is atan(v / |u|).
    expected = [reference_front(math.atan(b / abs(a)), FRONT_LOAD) for a, b in zip(u, v)]
    np.testing.assert_allclose(fx, 0.0, atol=1e-12)
    np.testing.assert_allclose(fy, expected, rtol=1e-9, atol=1e-9)


def test_a_full_slide_grips_harder_at_the_rear_only():
    """Growing slip: the force rises to mu_s x load at the grip limit, then the rear's jumps to mu_k."""
    limit = math.atan(3 * TYRES.mu_static * REAR_LOAD / TYRES.cornering_stiffness)
    angles = np.linspace(0.0, 1.2, 241)
    rear = -TYRES.rear(np.cos(angles), np.sin(angles), np.cos(angles), REAR_LOAD)[1]
    front = -TYRES.front(np.cos(angles), np.sin(angles), REAR_LOAD)[1]
    gripping = angles <= limit
    assert np.all(np.diff(rear[gripping]) > 0.0)
    assert rear[gripping][-1] == pytest.approx(TYRES.mu_static * REAR_LOAD, rel=1e-3)
    np.testing.assert_allclose(rear[~gripping], TYRES.mu_kinetic * REAR_LOAD)
    np.testing.assert_allclose(front[~gripping], TYRES.mu_static * REAR_LOAD)
    np.testing.assert_allclose(front[gripping], rear[gripping])


def test_braking_and_creeping_stay_bounded_and_oppose_the_motion():
    # Locked wheels while rolling forward and sideways: the force opposes both components.
    fx, fy = TYRES.rear(np.array([2.0, 0.5]), np.array([0.3, -0.2]), np.zeros(2), REAR_LOAD)
    assert np.all(fx < 0.0) and fy[0] < 0.0 < fy[1]
    # At a standstill the slip is measured against SLIP_MIN_SPEED: finite, and zero with no motion.
    sigma_x, sigma_y = TYRES.slip(np.array([0.0, 0.0, -3.0]), np.array([0.0, 0.01, 0.0]), np.array([0.0, 0.0, 2.0]))
    np.testing.assert_allclose(sigma_x, [0.0, 0.0, 5.0 / 3.0])
    np.testing.assert_allclose(sigma_y, [0.0, -0.01 / SLIP_MIN_SPEED, 0.0])
    assert np.all(np.hypot(*TYRES.rear(0.0, 0.0, 0.0, REAR_LOAD)) == 0.0)


def reference_wrench(v_x, v_y, yaw_rate, delta, wheel_speed, car=CAR, damping=(0.025, 0.02)):
    """Drift-v0's bicycle (``DynamicBicycleModel._dynamics``): body force and yaw torque, its
    damping of the accelerations written as forces."""
    alpha_f = math.atan2(v_y + car["front_axle"] * yaw_rate, v_x) - delta
    alpha_r = math.atan2(v_y - car["rear_axle"] * yaw_rate, v_x)
    f_yf = reference_front(alpha_f, car["front_load"])
    f_xr, f_yr = reference_rear(v_x, wheel_speed, alpha_r, car["rear_load"])
    torque = car["front_axle"] * f_yf * math.cos(delta) - car["rear_axle"] * f_yr
    force_x = f_xr - f_yf * math.sin(delta)
    force_y = f_yf * math.cos(delta) + f_yr
    return (force_x - damping[0] * car["mass"] * v_x, force_y - damping[0] * car["mass"] * v_y,
            torque - damping[1] * car["yaw_inertia"] * yaw_rate)


def test_the_planar_wrench_is_drift_v0s_bicycle():
    rng = np.random.default_rng(2)
    checked = 0
    for _ in range(400):
        v_x, v_y, yaw_rate = rng.uniform(0.5, 4.0), rng.uniform(-1.5, 1.5), rng.uniform(-4.0, 4.0)
        delta, wheel_speed = rng.uniform(-0.52, 0.52), v_x + rng.uniform(0.01, 3.0)
        front_v = v_y + CAR["front_axle"] * yaw_rate
        if math.cos(delta) * v_x + math.sin(delta) * front_v < SLIP_MIN_SPEED:
            continue  # the front axle creeping or rolling backwards: the two slips differ there
        np.testing.assert_allclose(planar_wrench(TYRES, CAR, v_x, v_y, yaw_rate, delta, wheel_speed),
                                   reference_wrench(v_x, v_y, yaw_rate, delta, wheel_speed), rtol=1e-9, atol=1e-9)
        checked += 1
    assert checked > 300


def test_the_planar_wrench_turns_the_way_it_is_steered():
    # Rolling straight at the wheels' speed: only the damping acts.
    fx, fy, torque = planar_wrench(TYRES, CAR, 2.0, 0.0, 0.0, 0.0, 2.0)
    assert (fx, fy, torque) == (pytest.approx(-TYRES.linear_damping * CAR["mass"] * 2.0), 0.0, 0.0)
    # Steered left at speed: the front pushes left and yaws the car left; mirrored, the opposite.
    left = planar_wrench(TYRES, CAR, 2.0, 0.0, 0.0, 0.3, 2.0)
    right = planar_wrench(TYRES, CAR, 2.0, 0.0, 0.0, -0.3, 2.0)
    assert left[1] > 0.0 and left[2] > 0.0
    np.testing.assert_allclose(right, [left[0], -left[1], -left[2]])
    # A car sliding sideways to the left with its tail swinging out: both axles push back.
    _, fy, _ = planar_wrench(TYRES, CAR, 1.0, 0.5, 0.0, 0.0, 1.0)
    assert fy < 0.0


@pytest.fixture(scope="module")
def drift_env():
    return make_task("rc_car_drift").make_env(SafetyConfig(), seed=0)


def hold(env, throttle: float, steer: float, steps: int) -> np.ndarray:
    env.reset(seed=0)
    return np.array([env.step([throttle, steer])[0] for _ in range(steps)])


def test_the_drift_car_rides_drift_v0s_tyres_on_frictionless_wheels(drift_env):
    task = drift_env.task
    assert isinstance(task, RcCarTask) and task.name == "rc_car_drift" and task.default_bundle is None
    assert task.target_speed == 3.8 and task.params_file == make_task("rc_car").params_file
    # Drift-v0's action: the rear wheels' speed, forwards only; the env clips a reverse command to 0.
    np.testing.assert_array_equal(np.c_[task.action_low, task.action_high], [[0.0, 1.0], [-1.0, 1.0]])
    # The speed error counts linearly: the best grip circle (3.29 m/s) is 0.134 short of a drift.
    on_circle = np.stack([obs_from_pose(1.0, 0.0, np.pi / 2, 0.0, v, v) for v in (3.8, 3.29, 4.31)])
    np.testing.assert_allclose(task.reward(on_circle, np.zeros((3, 2)), on_circle),
                               [1.0, 1 - 0.51 / 3.8, 1 - 0.51 / 3.8])
    assert drift_env.tyres == BrushTyres() and make_task("rc_car").make_env(SafetyConfig()).tyres is None
    drift_env.reset(seed=0)
    contacts = drift_env.data.contact[:drift_env.data.ncon]
    assert len(contacts) == 4 and all(contact.dim == 1 for contact in contacts)  # normal force only
    car = drift_env.car
    assert (car["mass"], car["front_axle"], car["rear_axle"]) == (pytest.approx(2.645), 0.137, 0.120)
    assert car["yaw_inertia"] == pytest.approx(0.0558, rel=0.01)
    assert car["front_load"] == pytest.approx(FRONT_LOAD, rel=0.01)
    assert car["rear_load"] == pytest.approx(REAR_LOAD, rel=0.01)
    assert drift_env.max_wheel_speed == pytest.approx(6.0, rel=0.01)


def test_the_drift_car_drives_straight_turns_left_and_stays_flat(drift_env):
    straight = hold(drift_env, 0.5, 0.0, 150)
    assert straight[-1, 2] == pytest.approx(0.5 * drift_env.max_wheel_speed, rel=0.05)
    assert abs(straight[-1, 3]) < 0.01 and drift_env.upright() > 0.999
    turning = hold(drift_env, 0.3, 0.5, 150)
    assert np.all(turning[50:, 4] > 0.5)  # yaw rate: counter-clockwise
    assert drift_env.upright() > 0.999


def test_the_drift_car_holds_a_power_slide_that_the_contact_car_spins_out_of(drift_env):
    """Held throttle and steer: on Drift-v0's tyres the tail steps out and stays out (a donut at
    about 50 degrees of body slip, ``bench/rc_car_drift/steady_states_brush.json``); on MuJoCo's
    contacts the car runs wide and leaves the arena (measured: after 5.8 s)."""
    slide = hold(drift_env, 0.6, 0.5, 500)[-150:]
    slip = np.degrees(np.arctan2(slide[:, 3], slide[:, 2]))
    assert np.all(slip < -40.0) and np.std(slip) < 1.0
    assert np.all(np.hypot(slide[:, 2], slide[:, 3]) > 1.0)
    contact_env = make_task("rc_car").make_env(SafetyConfig(), seed=0)
    contact_env.reset(seed=0)
    assert any(contact_env.step([0.6, 0.5])[3] for _ in range(500))


def test_the_drift_car_is_the_planar_car_its_tyres_push(drift_env):
    """MuJoCo's free body under the tyres' forces against a planar rigid body integrated here with
    the same wrench and the steer the servo reached: the frames, the point and the torque axis of the
    applied force are right if the two paths agree (measured: within 1.3 mm and 0.003 rad over 2 s)."""
    env, car, dt = drift_env, drift_env.car, drift_env.model.opt.timestep
    steer_qpos = [env.model.joint(name).qposadr[0] for name in ("steer_left", "steer_right")]
    for throttle, steer in [(0.5, 0.3), (0.6, 0.5), (0.3, -0.4)]:
        env.reset(seed=0)
        x, y, yaw, vx, vy, yaw_rate = env.pose()
        for _ in range(100):
            steer_before = float(np.mean(env.data.qpos[steer_qpos]))
            env.step([throttle, steer])
            steer_after = float(np.mean(env.data.qpos[steer_qpos]))
            for k in range(env.frame_skip):  # the servo's angle, interpolated over the control step
                angle = steer_before + (steer_after - steer_before) * k / env.frame_skip
                cos_yaw, sin_yaw = np.cos(yaw), np.sin(yaw)
                force_x, force_y, torque = planar_wrench(env.tyres, car, cos_yaw * vx + sin_yaw * vy,
                                                         -sin_yaw * vx + cos_yaw * vy, yaw_rate, angle,
                                                         throttle * env.max_wheel_speed)
                vx += dt * (cos_yaw * force_x - sin_yaw * force_y) / car["mass"]
                vy += dt * (sin_yaw * force_x + cos_yaw * force_y) / car["mass"]
                yaw_rate += dt * torque / car["yaw_inertia"]
                x, y, yaw = x + dt * vx, y + dt * vy, yaw + dt * yaw_rate
            pose = env.pose()
            assert np.hypot(pose[0] - x, pose[1] - y) < 0.005
            assert abs((pose[2] - yaw + np.pi) % (2 * np.pi) - np.pi) < 0.01
        assert np.hypot(vx, vy) > 1.0  # it went somewhere


def test_the_drift_car_is_deterministic_and_survives_nan_actions(drift_env):
    first = hold(RcCarEnv(drift_env.task, seed=3, tyres=BrushTyres()), 0.4, 0.2, 50)
    env = RcCarEnv(drift_env.task, seed=7, tyres=BrushTyres())
    np.testing.assert_array_equal(first, hold(env, 0.4, 0.2, 50))
    obs, *_ = env.step([np.nan, 0.0])
    assert np.all(np.isfinite(obs))
    reversing = hold(RcCarEnv(drift_env.task, seed=5, tyres=BrushTyres()), -1.0, 0.3, 20)
    np.testing.assert_array_equal(reversing, hold(RcCarEnv(drift_env.task, seed=5, tyres=BrushTyres()), 0.0, 0.3, 20))
