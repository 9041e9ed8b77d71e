"""The layout holds: packages by stage, small modules, private APIs in compat, seams chosen by tables, one
table of options per command. None of these tests imports TensorFlow."""

import ast
import configparser
import inspect
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "tltool")
PRIVATE_MODULES = ("keras.src", "keras_hub.src", "tensorflow.python", "tensorflow.lite.python")


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


def test_packages_by_stage_and_few_files_at_the_top():
    top = sorted(n for n in os.listdir(PACKAGE) if n.endswith(".py"))
    assert len(top) <= 10, top
    stages = {"data", "models", "training", "runs", "serving", "evaluation", "tasks", "workflows", "recipe", "cli"}
    assert stages <= {n for n in os.listdir(PACKAGE) if os.path.isdir(os.path.join(PACKAGE, n))}
    verbs = {"fit", "evaluate", "predict", "export", "explain", "audit", "plan"}
    names = {os.path.splitext(os.path.basename(p))[0] for p in _modules()} | set(os.listdir(PACKAGE))
    assert not names & verbs  # a module named like an API function would shadow it


def test_no_module_is_longer_than_400_lines():
    long = {os.path.relpath(p, ROOT): n for p in _modules() if (n := len(open(p, encoding="utf-8").readlines())) > 400}
    assert long == {}


def _own_private_names() -> set[str]:
    """The private names tltool defines itself: its functions and classes, and what it assigns on its own objects
    (``self._x``, ``cls._x``). A private name assigned on a library's object does not count."""
    own = set()
    for path in _modules():
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                    isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                own.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
    return own


def _private_uses(path: str, own: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{path}: import {n}" for n in names if n.startswith(PRIVATE_MODULES)]
        if isinstance(node, ast.Attribute) and re.fullmatch(r"_[a-z]\w*", node.attr) and node.attr not in own:
            found.append(f"{path}: .{node.attr}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1 and \
                isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str) and \
                re.fullmatch(r"_[a-z]\w*", node.args[1].value) and node.args[1].value not in own:
            found.append(f"{path}: {node.func.id}(..., {node.args[1].value!r})")
    return found


def test_only_compat_touches_private_tensorflow_and_keras():
    own = _own_private_names()
    found = [use for path in _modules() if not path.endswith("compat.py") for use in _private_uses(path, own)]
    assert found == []


def test_the_private_api_check_sees_imports_getattr_strings_and_foreign_assignments(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import keras_hub.src.models\nmodel._patched = 1\nx = model._patched\n"
                     "y = getattr(layer, '_inbound_nodes')\n")
    assert _private_uses(str(probe), _own_private_names()) == [
        f"{probe}: import keras_hub.src.models", f"{probe}: ._patched", f"{probe}: ._patched",
        f"{probe}: getattr(..., '_inbound_nodes')"]


def test_the_shipped_recipes_are_packaged_from_recipes_without_a_symlink():
    links = [os.path.join(r, n) for r, ds, fs in os.walk(ROOT) if ".venv" not in r and ".git" not in r
             for n in ds + fs if os.path.islink(os.path.join(r, n))]
    assert links == []
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    packages = config["options"]["packages"].split()
    folders = [os.path.relpath(r, PACKAGE) for r, _, fs in os.walk(PACKAGE) if "__init__.py" in fs]
    found = sorted("tltool" if rel == "." else "tltool." + rel.replace(os.sep, ".") for rel in folders)
    assert sorted(set(packages) - {"tltool.recipes"}) == found
    assert "tltool.recipes = recipes" in config["options"]["package_dir"]
    from tltool.recipe import shipped_recipes

    assert os.path.dirname(next(iter(shipped_recipes().values()))) == os.path.join(ROOT, "recipes")


def test_seams_are_tables_and_no_lower_stage_branches_on_a_task_name():
    from tltool.models.registry import SOURCES
    from tltool.tasks import TASKS, get_task
    from tltool.tasks.base import Task

    assert "keras.applications" in SOURCES and all(isinstance(t, Task) for t in TASKS.values())
    assert get_task().name == "single-label"
    lower = [p for p in _modules() if f"{os.sep}tasks{os.sep}" not in p]
    mentions = [p for p in lower if re.search(r"[=!]= *[\"'](single|multi)-label", open(p, encoding="utf-8").read())]
    assert mentions == []


@pytest.mark.parametrize("function, args, wrong, right", [
    ("fit", ("data/",), "epoch", "epochs"),
    ("evaluate", ("run", "data/"), "topk", "top_k"),
    ("predict", ("run", ["a.png"]), "batchsize", "batch_size"),
    ("export", ("run", "onnx"), "calibration_image", "calibration_images"),
])
def test_a_misspelt_keyword_is_a_type_error_before_anything_runs(function, args, wrong, right, tmp_path):
    import tltool

    with pytest.raises(TypeError, match=re.escape(f"unexpected keyword argument {wrong!r}; did you mean {right!r}?")):
        getattr(tltool, function)(*args, **{wrong: 3})


def test_signature_docstring_and_flags_come_from_one_table():
    import tltool
    from tltool import options
    from tltool.cli import cli

    for name, table in (("fit", options.FIT), ("evaluate", options.EVALUATE), ("predict", options.PREDICT),
                        ("export", options.EXPORT)):
        function = getattr(tltool, name)
        parameters = inspect.signature(function).parameters
        assert [p for p in parameters if parameters[p].kind == inspect.Parameter.KEYWORD_ONLY] == \
            table.python_names()
        assert all(f"{n} (" in function.__doc__ for n in table.python_names())
        command = cli.commands[name]
        flags = {opt for p in command.params for opt in p.opts}
        for option in table.options:
            if option.cli:
                assert option.spellings[0].split("/")[0] in flags, (name, option.name)
    assert inspect.signature(tltool.fit).parameters["epochs"].annotation == "int | str | None"


def test_plan_validate_and_backbones_are_functions_that_return_objects(tmp_path):
    import tltool
    from tltool.errors import RecipeError

    assert any(s.name == "resnet50" for s in tltool.backbones())
    recipe = tmp_path / "r.yaml"
    recipe.write_text("phases:\n  - {name: a, epochs: 1, trainable: {groups: [stage9]}}\n")
    with pytest.raises(RecipeError, match="no group 'stage9'"):
        tltool.validate_recipe(str(recipe), backbone="resnet50")
    checked = tltool.validate_recipe("fine-tune", backbone="resnet50")
    assert checked.backbone == "resnet50" and checked.phases[0][0] == "head"


@pytest.mark.slow
def test_listing_backbones_and_recipes_imports_no_tensorflow():
    code = ("import sys, tltool; tltool.backbones(); tltool.validate_recipe('fine-tune', backbone='resnet50'); "
            "print('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.strip() == "False", done.stderr


def test_no_import_cycles():
    """No module reaches itself through the modules it imports (the root package's lazy API aside)."""
    import grimp

    graph = grimp.build_graph("tltool", exclude_type_checking_imports=True)
    cycles = [(m, n) for m in sorted(graph.modules) if m != "tltool"
              for n in graph.find_modules_directly_imported_by(m) if n != "tltool"
              and (chain := graph.find_shortest_chain(importer=n, imported=m)) and "tltool" not in chain]
    assert cycles == []


def test_the_options_marked_as_recipe_overrides_are_exactly_what_the_recipe_takes():
    from tltool.options import FIT, LR_FIND
    from tltool.recipe import apply_overrides, load_recipe
    from tltool.recipe.overrides import OVERRIDES

    for table in (FIT, LR_FIND):
        marked = [o.name for o in table.options if o.recipe]
        assert set(marked) <= set(OVERRIDES), table.name
    assert {o.name for o in FIT.options if o.recipe} == set(OVERRIDES)
    samples = {"backbone": "resnet50", "weights": "none", "image_size": 64, "batch_size": 4, "seed": 3,
               "precision": "mixed_bfloat16", "jit_compile": True, "cache_features": False, "strategy": "default",
               "val_split": 0.3, "test_split": 0.1, "aspect": "crop", "check_leakage": False, "epochs": "7",
               "learning_rate": "x2"}
    base = load_recipe("fine-tune")
    for name in OVERRIDES:  # each changes the recipe: none is dropped on the way
        assert apply_overrides(base, **{name: samples[name]}) != base, name
    with pytest.raises(TypeError, match="no flag 'epoch'"):
        apply_overrides(base, epoch=3)


def test_a_task_that_misses_part_of_the_interface_cannot_be_made():
    from tltool.tasks.base import Task
    from tltool.tasks.single_label import SingleLabel

    class Half(Task):
        name = "half"

        def targets(self, labels, classes):
            return labels

    with pytest.raises(TypeError, match="abstract"):
        Half()
    called = {"describe_calibration", "render"}  # what finishing and the CLI call on every task
    assert called <= set(Task.__abstractmethods__) and not SingleLabel.__abstractmethods__
