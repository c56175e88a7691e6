"""The man pages are generated from the declarations and are valid roff."""

import importlib
import random
import subprocess

import pytest

from hapack import cli, install, manpage
from hapack.hamon import cli as hamon_cli
from hapack.stonith.fence_bmc import AGENT

DATE = "2026-01-02"


@pytest.fixture(scope="module")
def pages():
    return manpage.pages(DATE)


def groff(text):
    """(plain text, warnings) of a page rendered like man(1) does, every warning on."""
    done = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-rLL=200n"], input=text,
                          capture_output=True, text=True, timeout=30,
                          env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    # undo groff's hyphens and overstrikes so words can be searched for
    plain = subprocess.run(["col", "-bx"], input=done.stdout, capture_output=True, text=True,
                           timeout=30).stdout
    return plain.replace("\u2010", "-").replace("\u2212", "-"), done.stderr


def test_every_page_is_there_and_renders_without_warnings(pages):
    names = {"hapack.8", "hamon.8", "fence_bmc.8"} | {
        f"ocf_hapack_{a}.7" for a in install.OCF_AGENTS}
    assert names <= set(pages)
    for name, text in pages.items():
        assert text.startswith(f'.TH {name.rsplit(".", 1)[0].upper()} {name[-1]} "{DATE}"')
        plain, warnings = groff(text)
        assert warnings == "", f"{name}: {warnings}"
        assert "NAME" in plain and "SEE ALSO" in plain


def test_fence_bmc_page_has_every_parameter_alias_and_action(pages):
    plain = " ".join(groff(pages["fence_bmc.8"])[0].split())
    options = plain.split(" OPTIONS ")[1].split(" ACTIONS ")[0]
    actions = plain.split(" ACTIONS ")[1].split(" STDIN PARAMETERS ")[0]
    stdin = plain.split(" STDIN PARAMETERS ")[1].split(" SEE ALSO ")[0]
    for param in AGENT.params:
        for name in (param.name, *param.aliases):
            assert f" --{name.replace('_', '-')}" in f" {options}", name
            assert f" {name} " in f" {stdin}", f"stdin parameter {name}"
        if param.default is not None and not param.secret:
            assert f"Default: {param.default_text}." in options
    for action in AGENT.action_names():
        assert f" {action}," in f" {actions}," or f" {action} " in f" {actions} ", action
    assert AGENT.shortdesc in plain


def _options(parser):
    return [s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")]


def test_hamon_page_has_every_subcommand_and_option(pages):
    plain = " ".join(groff(pages["hamon.8"])[0].split())
    for name, _, sub in manpage._subcommands(hamon_cli.parser()):
        assert f"hamon {name}" in plain
        for option in _options(sub):
            assert option in plain, (name, option)


def test_hapack_page_has_every_subcommand_and_its_options(pages):
    plain = " ".join(groff(pages["hapack.8"])[0].split())
    for name, (module, summary) in cli.SUBCOMMANDS.items():
        assert f"hapack {name}" in plain and summary in plain
        parser = manpage._subcommand_parser(module)
        assert parser is not None, f"{module} declares no parser"
        for option in _options(parser):
            assert option in plain, (name, option)
        for sub, _, subparser in manpage._subcommands(parser):
            assert f"hapack {name} {sub}" in plain
            for option in _options(subparser):
                assert option in plain, (name, sub, option)


@pytest.mark.parametrize("agent", install.OCF_AGENTS)
def test_ocf_pages_have_every_parameter(pages, agent):
    declared = importlib.import_module(f"hapack.ocf.{agent}").AGENT
    plain = " ".join(groff(pages[f"ocf_hapack_{agent}.7"])[0].split())
    assert f"ocf:hapack:{agent}" in plain
    for param in declared.params:
        assert f" {param.name} " in plain, param.name
    for action in declared.all_actions():
        assert f" {action.name} " in plain


def test_the_pages_do_not_depend_on_the_machine(pages, monkeypatch):
    monkeypatch.setattr("os.uname", lambda: type("u", (), {"nodename": "elsewhere"})())
    assert manpage.pages(DATE) == pages


NASTY = [".TH", "'", ".", "\\", "\\fB", "-", "--x", "\\-", "\"", "%", "&", "<", ">",
         "\\\\", ".SH", "'br", "\\e", "..", " ", "\t", "é", "\\(", "\\*", "\\n"]


@pytest.mark.parametrize("seed", range(5))
def test_escape_never_lets_text_become_roff(seed):
    """Random text with roff's special characters: no warning, every word survives."""
    rng = random.Random(seed)
    page = manpage.Page("probe", 8, DATE, "a probe")
    words = []
    for number in range(40):
        text = "".join(rng.choice(NASTY + ["word"]) for _ in range(rng.randint(1, 8)))
        marker = f"mark{number}x"
        words.append(marker)
        lines = [text, f"{rng.choice(NASTY)}{marker}{rng.choice(NASTY)}"]
        rng.shuffle(lines)
        page.para("\n".join(lines))
        page.item(manpage.option(f"--{marker}"), text)
    plain, warnings = groff(page.text())
    assert warnings == ""
    for marker in words:
        assert marker in plain and f"--{marker}" in plain
    assert manpage.escape(".TH x") == "\\&.TH x" and manpage.escape("'x") == "\\&'x"
