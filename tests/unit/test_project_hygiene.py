"""Project rules that are easy to break: one set of pins, notebooks without outputs, parameters cells."""

import json
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _pins_from_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return sorted(project["dependencies"] + project["optional-dependencies"]["dev"])


def test_environment_yml_repeats_the_pyproject_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = sorted(p for p in pip_block if not p.startswith("-e"))
    assert pins == _pins_from_pyproject()
    assert "-e ." in pip_block
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(d.startswith("python=3.11") for d in conda) and any(d.startswith("openjdk=17") for d in conda)


def test_every_dependency_is_pinned_exactly():
    for pin in _pins_from_pyproject():
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.]*", pin), f"{pin} is not pinned with =="


def _notebooks():
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_numbered_and_committed_without_outputs():
    names = [p.stem for p in _notebooks()]
    assert names and names[0] == "00_provision" and names[-1] == "99_teardown"
    for path in _notebooks():
        assert re.fullmatch(r"\d\d_[a-z0-9_]+", path.stem), path.name
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert not cell.get("outputs"), f"{path.name} has outputs: clear them before committing"
                assert cell.get("execution_count") is None, f"{path.name} has execution counts"


def test_notebooks_have_a_parameters_cell_with_the_common_knobs():
    for path in _notebooks():
        nb = json.loads(path.read_text())
        tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
        source = "".join(tagged[0]["source"])
        for knob in ("target", "scale", "seed", "out_dir"):
            assert re.search(rf"^{knob}\s*=", source, re.M), f"{path.name}: parameter {knob} missing"
        code = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        assert "record_metrics(" in code, f"{path.name}: record its checkable results with workbook.record_metrics"


def test_no_credentials_in_the_repository():
    pattern = re.compile(r"(AKIA[0-9A-Z]{16}|aws_secret_access_key\s*=\s*['\"][A-Za-z0-9/+]{30,})")
    for path in ROOT.rglob("*"):
        if any(part in {".venv", ".git", "data", "build", "reports", ".shoplake"} for part in path.parts):
            continue
        if path.is_file() and path.suffix in {".py", ".yaml", ".yml", ".ipynb", ".toml", ".md", ".json"}:
            assert not pattern.search(path.read_text(errors="ignore")), f"credential-like string in {path}"


# Only these modules may look at the target: config (by_target, ensure_ready), the local services itself, and the
# workbook runner that passes the target on as a notebook parameter. Every part chooses its backend through
# config.by_target inside its own open_*/backend verb.
TARGET_DECIDERS = {"config.py", "_settings.py", "local_services.py"}
TARGET_TEST = re.compile(r"\bis_local\b|\btarget\s*[!=]=|[!=]=\s*[\"'](?:local|aws)[\"']")


def test_only_config_decides_the_target():
    offenders = []
    for path in sorted((ROOT / "lib" / "shoplake").rglob("*.py")):
        if path.name in TARGET_DECIDERS and path.parent.name == "shoplake":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if TARGET_TEST.search(line.split("#", 1)[0]):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            for line in "".join(cell["source"]).splitlines():
                if cell["cell_type"] == "code" and TARGET_TEST.search(line.split("#", 1)[0]):
                    offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert not offenders, "branch on the target only through config.by_target:\n" + "\n".join(offenders)


def test_readme_settings_table_is_the_knob_table():
    from shoplake import config

    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- settings-table", "<!-- /settings-table -->"
    block = readme[readme.index(start) : readme.index(end)].split("\n", 1)[1].strip()
    assert block == config.knob_table(), "README's settings table differs from shoplake._settings.KNOBS"


# The parts (one data product each) build on the shared layer (config, local_services, infra, resources, lake, streams,
# events, lambda_runtime, agent, datagen, ...) and never on each other.
PARTS = {"orders", "recommend", "alarm", "weblogs", "warehouse"}


def _import_graph() -> dict[str, set[str]]:
    """shoplake module → the shoplake modules it imports (``if TYPE_CHECKING`` imports are not dependencies;
    ``from package import submodule`` depends on the submodule)."""
    import ast

    lib = ROOT / "lib"
    modules = {}
    for path in (lib / "shoplake").rglob("*.py"):
        name = ".".join(path.relative_to(lib).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {
            id(node)
            for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for stmt in block.body
            for node in ast.walk(stmt)
        }
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                targets |= subs if len(subs) == len(node.names) else subs | {node.module}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_cycles_between_modules():
    graph = _import_graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" → ".join(c) for c in cycles)


def test_parts_import_only_the_shared_layer():
    def part(module: str) -> str | None:
        bits = module.split(".")
        return bits[1] if len(bits) > 1 and bits[1] in PARTS else None

    crossing = [
        f"{module} → {target}"
        for module, targets in sorted(_import_graph().items())
        for target in sorted(targets)
        if part(target) and part(target) != part(module)
    ]
    assert not crossing, "a part (or the shared layer) imports a part:\n" + "\n".join(crossing)
