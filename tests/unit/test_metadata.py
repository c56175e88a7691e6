"""Every agent's meta-data: golden file, OCF 1.1 RelaxNG, ocf-tester's DTD."""

import io
import os

import pytest
from lxml import etree

from hapack.agents import OCF_AGENTS, ocf_agent

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "metadata")
RNG = os.path.join(os.path.dirname(__file__), "..", "data", "ra-api-1.1.rng")
DTD = "/usr/share/resource-agents/ra-api-1.dtd"
AGENTS = list(OCF_AGENTS)


def test_every_agent_in_the_registry_has_a_golden_file_and_no_other():
    assert sorted(OCF_AGENTS) == sorted(name[:-len(".xml")] for name in os.listdir(DATA))


def metadata(name):
    out = io.StringIO()
    agent = ocf_agent(name)
    assert agent.execute(["meta-data"], {}, stdout=out) == 0
    return out.getvalue()


@pytest.mark.parametrize("name", AGENTS)
def test_metadata_matches_the_golden_file(name):
    with open(os.path.join(DATA, f"{name}.xml"), encoding="utf-8") as handle:
        golden = handle.read()
    assert metadata(name) == golden, (
        f"meta-data of {name} changed: if intended, regenerate with "
        f"python -m hapack.ocf.{name} meta-data > tests/data/metadata/{name}.xml")


@pytest.mark.parametrize("name", AGENTS)
def test_metadata_is_valid_ocf_1_1(name):
    schema = etree.RelaxNG(etree.parse(RNG))
    doc = etree.fromstring(metadata(name).encode())
    assert schema.validate(doc), schema.error_log
    assert doc.findtext("version") == "1.1"


@pytest.mark.parametrize("name", AGENTS)
def test_metadata_is_valid_for_ocf_tester(name):
    if not os.path.exists(DTD):
        pytest.skip("resource-agents is not installed (no ra-api-1.dtd)")
    dtd = etree.DTD(DTD)
    doc = etree.fromstring(metadata(name).encode())
    assert dtd.validate(doc), dtd.error_log
    assert b'<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">' in metadata(name).encode()


@pytest.mark.parametrize("name", AGENTS)
def test_metadata_escapes_markup(name, monkeypatch):
    """Descriptions with < and & stay well-formed (stock agents break on them)."""
    agent = ocf_agent(name)
    monkeypatch.setattr(agent, "longdesc", "a <b> & c")
    doc = etree.fromstring(metadata(name).encode())
    assert doc.findtext("longdesc") == "a <b> & c"
