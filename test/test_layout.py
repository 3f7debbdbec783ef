"""The package's layout rules, read from the source (``ast``), never by importing it:

(a) the commands sit side by side: no module of ``loop_ros/commands/`` imports another command
    module (what they share is in ``settings``, ``stack``, ``core.episodes``), and the launch file
    imports nothing of the commands, ``loop_ros.stack`` or ``loop_ros.cli`` (which loads them all);
(b) only the task modules know tasks: outside ``loop_ros/core/tasks/`` and ``loop_ros/sim/`` no module
    (the launch file included) names a task in a string literal or compares against one, and none
    imports a particular task's module (``core.tasks.<task>``, ``loop_ros.sim``).

Rule of (b): a string constant is a task name when it equals a registered task name (``BUILTIN_TASKS``,
installed entry points) or starts with ``gym:`` (the parts of an f-string count). Documentation is
not code: a string that is a statement of its own (a module, class, function or attribute
docstring) is skipped, and so are paths and help texts that merely contain a name
(``"config/rc_car.yaml"``). A name used in a comparison (``==``, ``in``, ``match``, ``startswith``: code that
branches on a task) is refused always; a literal elsewhere only where ``ALLOWED_TASK_LITERALS``
lists it, with its reason and how often it occurs (defaults and bench presets).

(c), that ``loop_ros/core`` imports no ROS package, is ``test_config.py``'s (its source and import checks).

Each checker is run on small synthetic sources first, so a passing layout test is not a blind one.
"""
from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import pytest

from loop_ros.core.tasks import BUILTIN_TASKS, GYM_PREFIX, known_task_names

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "loop_ros"
COMMANDS = PACKAGE / "commands"
LAUNCH_FILE = REPO / "launch" / "loop.launch.py"
TASK_OWNERS = ("loop_ros/core/tasks/", "loop_ros/sim/")
"""Where tasks are defined and simulated: these may name them."""
LAUNCH_MUST_NOT_IMPORT = ("loop_ros.commands", "loop_ros.stack", "loop_ros.cli")
GENERIC_TASK_MODULES = ("__init__", "base", "constraints")
"""The registry, the task spec and the constraint geometry: every module may import these."""
TASK_MODULES = tuple(f"loop_ros.core.tasks.{path.stem}" for path in sorted((PACKAGE / "core" / "tasks").glob("*.py"))
                     if path.stem not in GENERIC_TASK_MODULES)
"""The modules of particular tasks (``rc_car``, ``point_mass``, ``gym_mujoco``)."""
TASK_NAMES = frozenset(BUILTIN_TASKS) | frozenset(known_task_names())

ALLOWED_TASK_LITERALS: dict[tuple[str, str], tuple[int, str]] = {
    ("loop_ros/settings.py", "rc_car"): (1, "DEFAULT_TASK: --task of the headless commands and `bench loop`"),
    ("loop_ros/bench/plan.py", "rc_car"): (2, "the rc-car and safe-rc-car presets"),
    ("loop_ros/bench/plan.py", "gym:HalfCheetah-v5"): (1, "the paper-halfcheetah preset (Table 3 on HalfCheetah)"),
    ("loop_ros/bench/smoothing.py", "point_mass"): (1, "label of `bench smoothing`'s result: it runs the point mass"),
    ("loop_ros/core/config.py", "rc_car"): (1, "default of TaskConfig.name (task.name)"),
    ("launch/loop.launch.py", "rc_car"): (1, "default of the task launch argument"),
}
"""(file, literal) -> (occurrences, reason): the task names outside the task modules that are data, not branches."""
ALLOWED_TASK_IMPORTS: dict[tuple[str, str], str] = {
    ("loop_ros/bench/smoothing.py", "loop_ros.core.tasks.point_mass"):
        "`bench smoothing` measures ARC's smoothing factors on the point mass with its exact model",
}
"""(file, module) -> reason: imports of a particular task's module outside the task modules."""


# ---------------------------------------------------------------- checkers


def module_name(path: Path) -> str:
    """``loop_ros/commands/train.py`` -> ``loop_ros.commands.train`` (a package's ``__init__`` -> the package)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str = "", is_package: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every import of ``source`` (whose own dotted name is ``module``), relative imports
    resolved; ``from a import b`` yields ``a.b`` (``b`` may be a submodule), and a constant argument of
    ``importlib.import_module`` / ``__import__`` counts as an import too."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*anchor, *([base] if base else [])])
            found += [(node.lineno, f"{base}.{alias.name}" if base else alias.name) for alias in node.names]
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and ((isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                   or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__")))):
            found.append((node.lineno, node.args[0].value))
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def command_import_violations(source: str, module: str) -> list[str]:
    """Imports of another ``loop_ros.commands.<x>`` by the command module ``module``."""
    return [f"line {line}: {name}" for line, name in imported_modules(source, module)
            if within(name, "loop_ros.commands") and name != "loop_ros.commands" and not within(name, module)]


def forbidden_import_violations(source: str, module: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"line {line}: {name}" for line, name in imported_modules(source, module)
            if any(within(name, prefix) for prefix in forbidden)]


def task_module_imports(source: str, module: str) -> list[tuple[int, str]]:
    """Imports of a particular task's module (``TASK_MODULES``) or of anything of ``loop_ros.sim``;
    the spec and the registry (``from loop_ros.core.tasks import make_task``) are fine."""
    found = []
    for line, name in imported_modules(source, module):
        owner = next((prefix for prefix in ("loop_ros.sim", *TASK_MODULES) if within(name, prefix)), None)
        if owner is not None:
            found.append((line, owner))
    return found


def documentation_nodes(tree: ast.AST) -> set[int]:
    """ids of the string constants that are statements of their own (docstrings of any kind)."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)}


def is_task_name(text: str, names: frozenset[str] = TASK_NAMES) -> bool:
    return text in names or text.startswith(GYM_PREFIX)


def task_literals(source: str, names: frozenset[str] = TASK_NAMES) -> list[tuple[int, str, bool]]:
    """(line, literal, in_comparison) of every task-name string constant of ``source`` (module docstring)."""
    tree = ast.parse(source)
    documentation = documentation_nodes(tree)
    compared = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            compared |= {id(sub) for operand in (node.left, *node.comparators) for sub in ast.walk(operand)}
        elif isinstance(node, ast.MatchValue):
            compared |= {id(sub) for sub in ast.walk(node.value)}
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("startswith", "endswith", "removeprefix")):
            compared |= {id(sub) for arg in node.args for sub in ast.walk(arg)}
    return sorted((node.lineno, node.value, id(node) in compared) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and id(node) not in documentation and is_task_name(node.value, names))


def scanned_files() -> list[Path]:
    """Every module of ``loop_ros/`` outside the task owners, and the launch file."""
    files = [path for path in sorted(PACKAGE.rglob("*.py"))
             if not str(path.relative_to(REPO).as_posix()).startswith(TASK_OWNERS)]
    return files + [LAUNCH_FILE]


def relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# ---------------------------------------------------------------- the checkers catch what they should


def test_command_import_checker():
    module = "loop_ros.commands.train"
    bad = {
        "from loop_ros.commands.eval import evaluate_bundle\n": "loop_ros.commands.eval.evaluate_bundle",
        "import loop_ros.commands.bench\n": "loop_ros.commands.bench",
        "from loop_ros.commands import up\n": "loop_ros.commands.up",
        "from . import eval\n": "loop_ros.commands.eval",
        "from .up import run\n": "loop_ros.commands.up.run",
        "def f():\n    from loop_ros.commands.eval import run\n": "loop_ros.commands.eval.run",
        "import importlib\nimportlib.import_module('loop_ros.commands.eval')\n": "loop_ros.commands.eval",
    }
    for source, name in bad.items():
        assert command_import_violations(source, module) == [f"line {source.count(chr(10))}: {name}"], source
    for source in ("from loop_ros.settings import load_params\n", "from ..settings import TASK_HELP\n",
                   "import loop_ros.commands\n", "from loop_ros.core.episodes import evaluate_planner\n",
                   "from loop_ros import stack\n"):
        assert command_import_violations(source, module) == [], source
    assert imported_modules("from ..core import config\n", module) == [(1, "loop_ros.core.config")]
    assert imported_modules("from . import x\n", "loop_ros.nodes", is_package=True) == [(1, "loop_ros.nodes.x")]


def test_forbidden_import_checker():
    for source in ("from loop_ros.stack import bring_up\n", "import loop_ros.commands.up\n",
                   "from loop_ros import stack\n", "from loop_ros.cli import main\n"):
        assert forbidden_import_violations(source, "loop", LAUNCH_MUST_NOT_IMPORT), source
    for source in ("from loop_ros.settings import params_file_of\n", "from loop_ros.nodes import task_nodes\n",
                   "import loop_ros.stacked\n"):
        assert forbidden_import_violations(source, "loop", LAUNCH_MUST_NOT_IMPORT) == [], source


def test_task_module_import_checker():
    module = "loop_ros.nodes.planner"
    for source, name in {"from loop_ros.core.tasks.rc_car import obs_from_pose\n": "loop_ros.core.tasks.rc_car",
                         "from loop_ros.core.tasks import point_mass\n": "loop_ros.core.tasks.point_mass",
                         "import loop_ros.core.tasks.gym_mujoco\n": "loop_ros.core.tasks.gym_mujoco",
                         "from loop_ros.sim.gym_env import GymEnv\n": "loop_ros.sim",
                         "from ..core.tasks.rc_car import RcCarTask\n": "loop_ros.core.tasks.rc_car"}.items():
        assert task_module_imports(source, module) == [(1, name)], source
    assert {"loop_ros.core.tasks.rc_car", "loop_ros.core.tasks.point_mass", "loop_ros.core.tasks.gym_mujoco"} <= set(
        TASK_MODULES) and "loop_ros.core.tasks.base" not in TASK_MODULES
    for source in ("from loop_ros.core.tasks import make_task, TaskError, ODOMETRY\n",
                   "from loop_ros.core.tasks.rc_car_helpers import x\n", "from loop_ros.core.tasks.base import Task\n",
                   "from loop_ros.core.tasks.constraints import constraint_terms\n", "import loop_ros.core.tasks\n"):
        assert task_module_imports(source, module) == [], source


def test_task_literal_checker():
    names = frozenset({"rc_car", "point_mass"})
    source = '''"""Module docs: drive rc_car, or gym:Hopper-v5."""
DEFAULT = "rc_car"
PRESETS = {"point_mass": 1}
PATH = "config/rc_car.yaml"
HELP = "a task: rc_car, point_mass"
ENV = f"gym:{env_id}"


class Spec:
    """rc_car"""

    name: str = "point_mass"
    """point_mass, the attribute's docstring"""


def pick(task):
    """gym:Hopper-v5"""
    if task.name == "rc_car":
        return 1
    if "gym:" in task.name or task.name.startswith("gym:"):
        return 2
    match task.name:
        case "point_mass":
            return 3
'''
    assert task_literals(source, names) == [
        (2, "rc_car", False), (3, "point_mass", False), (6, "gym:", False), (12, "point_mass", False),
        (18, "rc_car", True), (20, "gym:", True), (20, "gym:", True), (23, "point_mass", True)]
    assert task_literals('"""rc_car"""\nx = "rc_cars"\ny = "models/rc_car"\n', names) == []


# ---------------------------------------------------------------- the package keeps the rules


def test_commands_do_not_import_each_other():
    modules = sorted(COMMANDS.glob("*.py"))
    assert {"train.py", "eval.py", "up.py", "bench.py"} <= {path.name for path in modules}
    offenders = {relative(path): violations for path in modules
                 if (violations := command_import_violations(path.read_text(encoding="utf-8"), module_name(path)))}
    assert offenders == {}


def test_launch_file_does_not_import_the_commands_or_the_stack():
    source = LAUNCH_FILE.read_text(encoding="utf-8")
    assert imported_modules(source, "loop_launch"), "the launch file's imports were not read"
    assert forbidden_import_violations(source, "loop_launch", LAUNCH_MUST_NOT_IMPORT) == []


def test_only_the_task_modules_name_tasks():
    files = scanned_files()
    assert PACKAGE / "commands" / "train.py" in files and PACKAGE / "core" / "tasks" / "rc_car.py" not in files
    branches, counts = [], Counter()
    for path in files:
        for line, literal, in_comparison in task_literals(path.read_text(encoding="utf-8")):
            if in_comparison:
                branches.append(f"{relative(path)}:{line}: compares against {literal!r}")
            counts[relative(path), literal] += 1
    assert branches == []
    unlisted = {key: count for key, count in counts.items()
                if count > ALLOWED_TASK_LITERALS.get(key, (0, ""))[0]}
    assert unlisted == {}, "task names outside the task modules (move them into the task, or allow-list them)"
    stale = {key for key, (count, _) in ALLOWED_TASK_LITERALS.items() if counts[key] < count}
    assert stale == set(), "allow-listed task literals that are gone: lower or drop their entries"


def test_only_the_task_modules_import_a_task():
    found = {(relative(path), name): line for path in scanned_files()
             for line, name in task_module_imports(path.read_text(encoding="utf-8"), module_name(path)
                                                   if path != LAUNCH_FILE else "loop_launch")}
    unlisted = {f"{file}:{line}: {name}" for (file, name), line in found.items()
                if (file, name) not in ALLOWED_TASK_IMPORTS}
    assert unlisted == set()
    assert set(ALLOWED_TASK_IMPORTS) <= set(found), "allow-listed task imports that are gone: drop their entries"


@pytest.mark.parametrize("key", sorted(ALLOWED_TASK_LITERALS), ids="{0[0]}:{0[1]}".format)
def test_allow_list_entries_name_real_files_and_tasks(key):
    file, literal = key
    count, reason = ALLOWED_TASK_LITERALS[key]
    assert (REPO / file).is_file() and not file.startswith(TASK_OWNERS)
    assert is_task_name(literal) and count >= 1 and reason


ROS_PACKAGES = ("rclpy", "rcl_interfaces", "std_msgs", "nav_msgs", "geometry_msgs", "diagnostic_msgs",
                "builtin_interfaces", "rosgraph_msgs", "lifecycle_msgs")
NODE_GLUE_WITHOUT_ROS = {
    "loop_ros/nodes/node_log.py": "rate-limited logging onto an rclpy logger it is handed",
    "loop_ros/nodes/foxglove_scene.py": "the Foxglove bridge's scene, in foxglove-sdk messages",
}


def imports_ros(path: Path) -> bool:
    source = path.read_text(encoding="utf-8")
    return any(within(name, package) for _, name in imported_modules(source, module_name(path))
               for package in ROS_PACKAGES)


def test_nodes_hold_only_rclpy_glue_and_the_runtime_parts_import_no_ros():
    """``nodes/`` holds the rclpy nodes and their message and parameter glue; the ROS-free runtime
    parts (plan worker, tick policy, model loader, training worker) live in ``workers/``."""
    without_ros = [relative(p) for p in sorted((PACKAGE / "nodes").glob("*.py")) if not imports_ros(p)]
    assert sorted(without_ros) == sorted(NODE_GLUE_WITHOUT_ROS)
    with_ros = [relative(p) for p in sorted((PACKAGE / "workers").glob("*.py")) if imports_ros(p)]
    assert with_ros == []
