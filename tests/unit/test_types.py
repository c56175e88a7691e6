"""Types are checked: mypy runs clean on the installed package, every public
function of core/, ocf/, stonith/, hamon/ and cib-templates/ is annotated, and
a misspelled parameter name is a type error, not a runtime AttributeError.

mypy reads its settings from the repository's setup.cfg ([mypy] sections) and
runs from a directory outside the checkout, on the installed ``hapack``: the
source folders are not import names (core/ is hapack, ocf/ is hapack.ocf...).
"""

import ast
import os
import subprocess
import sys

import pytest

from hapack.agents import FENCE_AGENTS, OCF_AGENTS, fence_agent, ocf_agent
from hapack.params import Values

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "setup.cfg")
CHECKED = ("core", "ocf", "stonith", "hamon", "cib-templates")
KIND_TYPES = {"string": "str", "integer": "int", "boolean": "bool", "float": "float",
              "choice": "str"}


def mypy(tmp_path, *args):
    """python -m mypy with the repository's configuration, from outside the checkout."""
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", CONFIG,
         "--cache-dir", str(tmp_path / "cache"), *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)


# -- the checker ------------------------------------------------------------------

def test_mypy_runs_clean_on_the_installed_package(tmp_path):
    result = mypy(tmp_path, "-p", "hapack")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


SNIPPET = '''
from hapack.ocf.runner import Context
from hapack.ocf.apache import Params as ApacheParams
from hapack.ocf.vip import Params as VipParams
from hapack.stonith.fence_bmc import Params as BmcParams


def vip(ctx: Context[VipParams]) -> str:
    return ctx.params.{vip}


def apache(ctx: Context[ApacheParams]) -> int | None:
    return ctx.params.{apache}          # declared in hapack.ocf._daemon.ServerParams


def fence(values: BmcParams) -> str | None:
    return values.{bmc}
'''


@pytest.mark.parametrize("vip,apache,bmc", [
    ("ipp", "port", "password"),        # vip: ip
    ("ip", "prot", "password"),         # apache: port (a shared declaration)
    ("ip", "port", "pasword"),          # fence_bmc: password
])
def test_a_misspelled_parameter_is_a_type_error(tmp_path, vip, apache, bmc):
    path = tmp_path / "typo.py"
    path.write_text(SNIPPET.format(vip=vip, apache=apache, bmc=bmc))
    result = mypy(tmp_path, str(path))
    wrong = next(name for name in (vip, apache, bmc) if name not in ("ip", "port", "password"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f'"Params" has no attribute "{wrong}"' in result.stdout, result.stdout
    assert "Found 1 error" in result.stdout, result.stdout


def test_the_right_names_type_check(tmp_path):
    path = tmp_path / "right.py"
    path.write_text(SNIPPET.format(vip="ip", apache="port", bmc="password"))
    result = mypy(tmp_path, str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# -- annotations --------------------------------------------------------------------

def _public_functions(tree):
    """(qualified name, node) of module-level functions and methods of public classes."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if not node.name.startswith("_"):
                yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                        and not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item


def _missing(node, is_method):
    a = node.args
    params = a.posonlyargs + a.args + a.kwonlyargs + [p for p in (a.vararg, a.kwarg) if p]
    first = (a.posonlyargs + a.args)[:1]
    skip = {p.arg for p in first} if is_method and first and first[0].arg in ("self", "cls") \
        else set()
    missing = [p.arg for p in params if p.annotation is None and p.arg not in skip]
    return missing + (["return"] if node.returns is None else [])


def _unannotated():
    found = []
    for folder in CHECKED:
        for base, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(base, name)
                with open(path, encoding="utf-8") as handle:
                    tree = ast.parse(handle.read(), path)
                for qualname, node in _public_functions(tree):
                    missing = _missing(node, "." in qualname)
                    if missing:
                        found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} "
                                     f"{qualname}: {', '.join(missing)}")
    return found


def test_every_public_function_is_annotated():
    assert _unannotated() == []


def test_the_annotation_check_sees_a_missing_annotation(tmp_path):
    tree = ast.parse("def f(a: int, b) -> None: ...\n"
                     "class C:\n    def m(self, x: int): ...\n    def _p(self, y): ...\n")
    found = {q: _missing(n, "." in q) for q, n in _public_functions(tree)}
    assert found == {"f": ["b"], "C.m": ["return"]}


# -- the typed parameter views agree with the Param tables --------------------------

def _annotations(cls):
    """Field name -> annotation text over the class and its bases up to Values."""
    fields = {}
    for klass in reversed(cls.__mro__):
        if issubclass(klass, Values) and klass is not Values:
            fields.update(klass.__dict__.get("__annotations__", {}))
    return fields


def _type_set(text):
    return frozenset(part.strip() for part in str(text).split("|"))


def _expected(param):
    """The type a parsed value has: the check's return type, else the kind's;
    None too when the parameter is optional and has no default."""
    if param.check is not None:
        base = param.check.__annotations__["return"]
    else:
        base = KIND_TYPES[param.kind]
    types = set(_type_set(base))
    if not param.required and param.default is None:
        types.add("None")
    return frozenset(types)


AGENTS = [("ocf", name, ocf_agent) for name in OCF_AGENTS] + \
         [("fence", name, fence_agent) for name in FENCE_AGENTS]


@pytest.mark.parametrize("kind,name,load", AGENTS, ids=[a[1] for a in AGENTS])
def test_the_params_view_names_every_parameter_with_its_type(kind, name, load):
    agent = load(name)
    assert agent.values is not Values, f"{name}: no typed view (values=Params)"
    fields = _annotations(agent.values)
    declared = {p.name: p for p in agent.params}
    assert sorted(fields) == sorted(declared)
    wrong = {n: (fields[n], " | ".join(sorted(_expected(p)))) for n, p in declared.items()
             if _type_set(fields[n]) != _expected(p)}
    assert wrong == {}


@pytest.mark.parametrize("kind,name,load", AGENTS, ids=[a[1] for a in AGENTS])
def test_parsing_builds_the_typed_view(kind, name, load):
    agent = load(name)
    from hapack.params import parse
    values = parse(agent.params, {}, lenient_missing=True, into=agent.values)
    assert type(values) is agent.values
    assert {n: values[n] for n in _annotations(agent.values)} == dict(values.items())


@pytest.mark.parametrize("name", list(OCF_AGENTS))
def test_every_verb_takes_the_agents_typed_context(name):
    agent = ocf_agent(name)
    handlers = {a.handler for a in agent.actions if a.handler is not None}
    handlers |= {agent.validate} if agent.validate is not None else set()
    for handler in handlers:
        text = handler.__annotations__.get("ctx")
        assert text is not None and text.startswith("Context[") and text.endswith("]"), \
            f"{name}: {handler.__qualname__}(ctx: {text})"
        view = eval(text[len("Context["):-1], handler.__globals__)  # a class of the module
        assert issubclass(agent.values, view), f"{name}: {handler.__qualname__} takes {text}"


def test_the_runner_hands_the_typed_view_to_the_verbs():
    from hapack.ocf import Action, Agent
    from hapack.params import Param

    class Params(Values):
        size: int

    seen = []
    agent = Agent("t", version="1", shortdesc="t", longdesc="t",
                  params=(Param("size", "s", kind="integer", default=3),),
                  actions=[Action(verb, lambda ctx: seen.append(ctx.params), 20)
                           for verb in ("start", "stop", "monitor")], values=Params)
    assert agent.execute(["start"], {"OCF_RESKEY_size": "5"}) == 0
    assert type(seen[0]) is Params and seen[0].size == 5
