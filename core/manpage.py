"""Man pages in roff, generated from the declarations that drive the programs.

Like fence-agents (whose man pages come from each agent's meta-data, through
``fence2man.xsl``) and resource-agents (``ocf_heartbeat_<agent>(7)`` from
``ra2refentry.xsl``), nothing here is written twice: ``fence_bmc(8)`` is read
from the meta-data tree built from its parameter table, ``ocf_hapack_<agent>(7)``
from each agent's OCF meta-data tree, and ``hamon(8)`` and ``hapack(8)`` from
the argparse parsers the commands parse their arguments with (and the
``hapack`` subcommand table). The Debian package runs
``python3 -m hapack.manpage OUTDIR`` at build time.

::

    python -m hapack.manpage OUTDIR [--date YYYY-MM-DD]
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hapack.stonith.fencing import FenceAgent
    from hapack.ocf.runner import Agent

MANUAL = "hapack"
SEE_ALSO = ("hapack(8)", "hamon(8)", "fence_bmc(8)", "crm_resource(8)", "stonith_admin(8)")


def escape(text: str) -> str:
    """Running text as roff: backslashes escaped, no line starting a request."""
    lines = []
    for line in str(text).replace("\\", "\\e").splitlines():
        line = line.strip()
        lines.append("\\&" + line if line.startswith((".", "'")) else line)
    return "\n".join(line for line in lines if line)


def option(text: str) -> str:
    """An option or command name, with its hyphens as minus signs (copy-and-paste safe)."""
    return escape(text).replace("-", "\\-")


class Page:
    """A man page under construction: the title line, then sections."""

    def __init__(self, name: str, section: int, date: str, summary: str) -> None:
        self.lines = [f'.TH {name.upper()} {section} "{date}" "{MANUAL}" "{MANUAL} manual"',
                      ".SH NAME", f"{option(name)} \\- {escape(summary)}"]

    def section(self, title: str) -> None:
        self.lines.append(f".SH {title.upper()}")

    def para(self, text: str) -> None:
        if text and text.strip():
            self.lines += [".PP", escape(text)]

    def item(self, tag: str, text: str) -> None:
        """A tagged paragraph; ``tag`` is roff already (use ``option``)."""
        self.lines += [".TP", f".B {tag}", escape(text) if text.strip() else "\\&"]

    def raw(self, line: str) -> None:
        self.lines.append(line)

    def see_also(self, own: str) -> None:
        self.section("see also")
        refs = [ref for ref in SEE_ALSO if not ref.startswith(f"{own}(")]
        self.lines.append(",\n".join(f".BR {ref.split('(')[0]} ({ref.split('(')[1]}"
                                     for ref in refs))

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def sentences(parts: list[str]) -> str:
    """Join descriptions, ending each with a full stop."""
    return " ".join(p if p.endswith((".", "!", "?", ":", ")")) else f"{p}."
                    for p in (part.strip() for part in parts) if p)


def _desc(element, tag: str) -> str:
    found = element.find(tag)
    return "" if found is None or found.text is None else found.text.strip()


# -- fence_bmc(8), from its meta-data ------------------------------------------

def fence_agent_page(agent: FenceAgent, date: str) -> str:
    """A fence agent's page from the meta-data tree pacemaker-fenced reads."""
    from hapack.stonith.metadata import metadata_tree
    tree = metadata_tree(agent)
    page = Page(agent.name, 8, date, tree.get("shortdesc"))
    page.section("synopsis")
    page.raw(f".B {option(agent.name)}\n\\-\\-action=\\fIACTION\\fR [\\fIOPTION\\fR...]")
    page.raw(f".br\n.B {option(agent.name)}\n< \\fIname=value lines\\fR")
    page.section("description")
    page.para(_desc(tree, "longdesc"))
    page.para(f"{agent.name} reads its parameters from the command line, or, when it is given "
              "no arguments, as name=value lines on its standard input: the way "
              "pacemaker-fenced runs it.")
    parameters = tree.find("parameters")
    page.section("options")
    for param in parameters:
        page.item(option(param.find("getopt").get("mixed")), _param_text(param))
    page.section("actions")
    page.para("The action is given as --action (or action= on standard input):")
    page.raw(".RS\n" + ",\n".join(f".B {option(a.get('name'))}" for a in tree.find("actions"))
             + "\n.RE")
    page.section("stdin parameters")
    for param in parameters:
        page.item(option(param.get("name")), _param_text(param))
    page.see_also(agent.name)
    return page.text()


def _described(param) -> list[str]:
    """A parameter's short description, then its long one when it says more."""
    parts = [_desc(param, "shortdesc")]
    long = _desc(param, "longdesc")
    if long and long != parts[0]:
        parts.append(long)
    return parts


def _param_text(param) -> str:
    parts = _described(param)
    content = param.find("content")
    choices = [o.get("value") for o in content.findall("option")]
    if choices:
        parts.append(f"One of: {', '.join(choices)}.")
    if content.get("default") is not None:
        parts.append(f"Default: {content.get('default')}.")
    if param.get("required") == "1":
        parts.append("Required.")
    if param.get("obsoletes"):
        parts.append(f"Also accepted under its older name {param.get('obsoletes')}.")
    return sentences(parts)


# -- ocf_hapack_<agent>(7), from the OCF meta-data -------------------------------

def ocf_agent_page(agent: Agent, date: str) -> str:
    """An OCF agent's page, named like resource-agents' (ocf_heartbeat_IPaddr2(7))."""
    from hapack.ocf.metadata import metadata_tree
    tree = metadata_tree(agent)
    page = Page(f"ocf_hapack_{agent.name}", 7, date, _desc(tree, "shortdesc"))
    page.section("synopsis")
    names = [p.get("name") for p in tree.find("parameters")]
    page.raw(f".B ocf:hapack:{option(agent.name)}\n"
             + " ".join(f"[{option(n)}=\\fIvalue\\fR]" for n in names))
    page.section("description")
    page.para(_desc(tree, "longdesc"))
    page.section("parameters")
    for param in tree.find("parameters"):
        page.item(option(param.get("name")), _ocf_param_text(param))
    page.section("supported actions")
    for action in tree.find("actions"):
        detail = ", ".join(f"{key} {action.get(key)}" for key in
                           ("timeout", "interval", "depth", "role") if action.get(key))
        page.item(option(action.get("name")), detail)
    page.see_also("")
    return page.text()


def _ocf_param_text(param) -> str:
    parts = _described(param)
    content = param.find("content")
    if content.get("default") is not None:
        parts.append(f"Default: {content.get('default') or '(empty)'}.")
    if param.get("required") == "1":
        parts.append("Required.")
    if param.get("unique") == "1":
        parts.append("Unique among the resources of this agent.")
    return sentences(parts)


# -- hamon(8) and hapack(8), from their argparse parsers -------------------------

def _option_tag(action) -> str:
    names = ", ".join(action.option_strings) or (action.metavar or action.dest)
    if action.option_strings and action.nargs != 0:
        value = action.metavar or action.dest.upper()
        names += f" {value}"
    return option(names)


def _action_text(action) -> str:
    text = (action.help or "").replace("%%", "%")
    if action.choices and not isinstance(action, argparse._SubParsersAction):
        text += f" (one of: {', '.join(map(str, action.choices))})"
    return text


def _arguments(page: Page, cli: argparse.ArgumentParser) -> None:
    for action in cli._actions:  # argparse's own declaration of every argument
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        page.item(_option_tag(action), _action_text(action))


def _usage(cli: argparse.ArgumentParser) -> str:
    usage = " ".join(cli.format_usage().split())
    return usage.removeprefix("usage: ")


def _subcommands(cli: argparse.ArgumentParser):
    """(name, help, parser) of each subcommand of an argparse parser."""
    for action in cli._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _command_section(page: Page, usage: str, summary: str, cli) -> None:
    page.raw(".SS " + option(usage))
    page.para(summary)
    if cli is not None:
        _arguments(page, cli)
        for name, text, sub in _subcommands(cli):
            page.raw(".TP\n.B " + option(_usage(sub)))
            page.raw(escape(text) or "\\&")
            page.raw(".RS")
            _arguments(page, sub)
            page.raw(".RE")


def hamon_page(date: str) -> str:
    from hapack.hamon import cli
    parser = cli.parser()
    page = Page("hamon", 8, date, parser.description or "")
    page.section("synopsis")
    for name, _, sub in _subcommands(parser):
        page.raw(".B " + option(_usage(sub)) + "\n.br")
    page.section("description")
    page.para("hamon is a standalone heartbeat and failover daemon for two-node systems without "
              "Corosync: it runs the same OCF agents and the same fence agent as a Pacemaker "
              "cluster, from the same stack file. Run it with systemd (hamon.service, not "
              "enabled by the package: edit /etc/hapack/stack.toml, copy the key file to both "
              "nodes, then systemctl enable --now hamon).")
    page.section("commands")
    for name, text, sub in _subcommands(parser):
        page.item(option(_usage(sub)), text)
        page.raw(".RS")
        _arguments(page, sub)
        page.raw(".RE")
    page.see_also("hamon")
    return page.text()


def _subcommand_parser(module_name: str):
    """The argparse parser a ``hapack`` subcommand declares, or None."""
    module = importlib.import_module(module_name)
    for name in ("parser", "build_parser", "_parser"):
        if callable(getattr(module, name, None)):
            return getattr(module, name)()
    return None


def hapack_page(date: str) -> str:
    from hapack import cli
    page = Page("hapack", 8, date, "two-node failover of a layered Java middleware stack")
    page.section("synopsis")
    page.raw(".B hapack\n\\fICOMMAND\\fR [\\fIARGS\\fR...]")
    page.section("description")
    page.para("hapack makes a layered middleware stack highly available on two nodes: OCF "
              "resource agents (ocf:hapack:*), the BMC fence agent fence_bmc, renderers of the "
              "Pacemaker, crm shell, corosync and Heartbeat configurations from one stack "
              "file, and the hamon daemon. The hapack command is the entry point to the "
              "renderers, the install step of a venv, and the lab and its demo.")
    page.section("commands")
    for name, (module, summary) in cli.SUBCOMMANDS.items():
        parser = _subcommand_parser(module)
        usage = _usage(parser) if parser else f"hapack {name}"
        _command_section(page, usage, summary, parser)
    page.see_also("hapack")
    return page.text()


# -- all of them ----------------------------------------------------------------

def pages(date: str) -> dict[str, str]:
    """File name -> roff of every page."""
    from hapack.agents import OCF_AGENTS, SBIN_TOOLS
    from hapack.stonith.fence_bmc import AGENT
    found = {"hapack.8": hapack_page(date), "hamon.8": hamon_page(date),
             "fence_bmc.8": fence_agent_page(AGENT, date)}
    for name in OCF_AGENTS:
        agent = importlib.import_module(f"hapack.ocf.{name}").AGENT
        found[f"ocf_hapack_{name}.7"] = ocf_agent_page(agent, date)
    for name, module in SBIN_TOOLS.items():  # once a tool declares its parser()
        parser = _subcommand_parser(module)
        if parser is not None:
            found[f"{name}.8"] = tool_page(name, parser, date)
    return found


def tool_page(name: str, parser: argparse.ArgumentParser, date: str) -> str:
    page = Page(name, 8, date, parser.description or name)
    page.section("synopsis")
    page.raw(".B " + option(_usage(parser).replace(parser.prog, name, 1)))
    page.section("options")
    _arguments(page, parser)
    page.see_also("")
    return page.text()


def build_date() -> str:
    """SOURCE_DATE_EPOCH's day (reproducible builds), or today."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch
            else datetime.datetime.now(datetime.timezone.utc))
    return when.strftime("%Y-%m-%d")


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m hapack.manpage",
                                  description="write the man pages into a directory")
    cli.add_argument("outdir")
    cli.add_argument("--date", default=None, help="the date on the pages (default: "
                     "$SOURCE_DATE_EPOCH's, or today)")
    args = cli.parse_args(argv)
    os.makedirs(args.outdir, exist_ok=True)
    for name, text in pages(args.date or build_date()).items():
        with open(os.path.join(args.outdir, name), "w", encoding="utf-8") as handle:
            handle.write(text)
        print(os.path.join(args.outdir, name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
