"""The OCF runner: dispatch, exit codes, exit reasons, probe rules, levels, notify."""

import io

import pytest

from hapack.ocf import OCF, Action, Agent, ConfigError, GenericError, NotInstalled, Notify, Param
from hapack.ocf.runner import Context
from hapack.command import CommandTimeout


def make_agent(**handlers):
    calls = []

    def verb(name):
        def handler(ctx):
            calls.append((name, ctx))
            if name in handlers:
                return handlers[name](ctx)
            return None
        return handler

    agent = Agent(
        "toy", version="1.0", shortdesc="toy", longdesc="a toy agent",
        params=(Param("name", "a name", required=True, unique=True),
                Param("count", "a count", kind="integer", default=3, minimum=1),
                Param("flag", "a flag", kind="boolean", default=False),
                Param("mode", "a mode", kind="choice", choices=("a", "b"), default="a"),
                Param("secret", "a secret", secret=True)),
        actions=(Action("start", verb("start"), 20), Action("stop", verb("stop"), 20),
                 Action("monitor", verb("monitor"), 20, interval=10, depth=0),
                 Action("monitor", verb("monitor"), 30, interval=30, depth=10)),
        validate=verb("validate"),
    )
    return agent, calls


def execute(agent, action, env=None, **params):
    environ = {"OCF_RESOURCE_INSTANCE": "t1"}
    environ.update({f"OCF_RESKEY_{k}": v for k, v in params.items()})
    environ.update(env or {})
    out, err = io.StringIO(), io.StringIO()
    code = agent.execute([action] if action else [], environ, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def reasons(err):
    return [line[len("ocf-exit-reason:"):] for line in err.splitlines()
            if line.startswith("ocf-exit-reason:")]


def test_codes_are_the_ocf_numbers():
    assert [int(c) for c in (OCF.SUCCESS, OCF.ERR_GENERIC, OCF.ERR_ARGS, OCF.ERR_UNIMPLEMENTED,
                             OCF.ERR_PERM, OCF.ERR_INSTALLED, OCF.ERR_CONFIGURED,
                             OCF.NOT_RUNNING, OCF.RUNNING_PROMOTED, OCF.FAILED_PROMOTED)] \
        == list(range(10))


def test_typed_parsing_reaches_the_verb():
    agent, calls = make_agent()
    code, _, _ = execute(agent, "start", name="x", count="7", flag="yes", mode="b")
    assert code == OCF.SUCCESS
    params = calls[-1][1].params
    assert (params.name, params.count, params.flag, params.mode) == ("x", 7, True, "b")


def test_defaults_apply_and_empty_means_unset():
    agent, calls = make_agent()
    assert execute(agent, "start", name="x", count="")[0] == OCF.SUCCESS
    assert calls[-1][1].params.count == 3


@pytest.mark.parametrize("key,value,words", [
    ("count", "seven", "'count': 'seven' is not an integer"),
    ("count", "0", "'count': '0' is below the minimum 1"),
    ("flag", "maybe", "'flag': 'maybe' is not a boolean (use true or false)"),
    ("mode", "c", "'mode': 'c' is not one of: a, b"),
])
def test_bad_values_give_6_with_a_reason(key, value, words):
    agent, calls = make_agent()
    code, _, err = execute(agent, "start", name="x", **{key: value})
    assert code == OCF.ERR_CONFIGURED
    assert reasons(err) == [f"parameter {words}"]
    assert [c for c, _ in calls] == []  # nothing ran


@pytest.mark.parametrize("action,env,code", [
    ("start", {}, OCF.ERR_CONFIGURED),
    ("validate-all", {}, OCF.ERR_CONFIGURED),
    ("stop", {}, OCF.SUCCESS),
    ("monitor", {}, OCF.NOT_RUNNING),                                   # interval unset: probe
    ("monitor", {"OCF_RESKEY_CRM_meta_interval": "0"}, OCF.NOT_RUNNING),
    ("monitor", {"OCF_RESKEY_CRM_meta_interval": "10000"}, OCF.ERR_CONFIGURED),
])
def test_missing_required_parameter(action, env, code):
    agent, calls = make_agent()
    got, _, err = execute(agent, action, env)
    assert got == code
    assert calls == []
    if code == OCF.ERR_CONFIGURED:
        assert reasons(err) == ["parameter 'name': is required but not set"]


@pytest.mark.parametrize("error", [NotInstalled("no binary"), ConfigError("bad config")])
def test_probe_reports_not_running_never_installed_or_configured(error):
    def fail(ctx):
        raise error
    agent, _ = make_agent(monitor=fail)
    assert execute(agent, "monitor", name="x")[0] == OCF.NOT_RUNNING
    code, _, err = execute(agent, "monitor", {"OCF_RESKEY_CRM_meta_interval": "10000"}, name="x")
    assert code == error.code and reasons(err) == [str(error)]


def test_unexpected_exception_is_a_generic_error_with_a_reason():
    agent, _ = make_agent(start=lambda ctx: {}["boom"])
    code, _, err = execute(agent, "start", name="x")
    assert code == OCF.ERR_GENERIC
    assert reasons(err) == ["internal error in toy start: KeyError: 'boom'"]


def test_command_timeout_becomes_generic_error():
    def slow(ctx):
        raise CommandTimeout(["sleep", "9"], "no answer within 1.0s")
    agent, _ = make_agent(start=slow)
    code, _, err = execute(agent, "start", name="x")
    assert code == OCF.ERR_GENERIC and reasons(err) == ["sleep 9: no answer within 1.0s"]


def test_exit_reason_is_one_line():
    agent, _ = make_agent(start=lambda ctx: (_ for _ in ()).throw(GenericError("two\nlines")))
    assert reasons(execute(agent, "start", name="x")[2]) == ["two lines"]


def test_verbs_return_codes():
    agent, _ = make_agent(monitor=lambda ctx: OCF.NOT_RUNNING)
    assert execute(agent, "monitor", name="x")[0] == OCF.NOT_RUNNING


def test_no_action_unknown_action_and_extra_arguments():
    agent, calls = make_agent()
    assert execute(agent, None)[0] == OCF.ERR_ARGS
    code, _, err = execute(agent, "migrate_to", name="x")
    assert code == OCF.ERR_UNIMPLEMENTED and "not implemented" in reasons(err)[0]
    out, err = io.StringIO(), io.StringIO()
    assert agent.execute(["start", "ignored"], {"OCF_RESKEY_name": "x"}, out, err) == OCF.SUCCESS


def test_meta_data_needs_no_parameters():
    agent, calls = make_agent()
    code, out, _ = execute(agent, "meta-data")
    assert code == OCF.SUCCESS and "<resource-agent" in out and calls == []


def test_validate_runs_before_start_and_for_validate_all():
    agent, calls = make_agent()
    execute(agent, "start", name="x")
    assert [c for c, _ in calls] == ["validate", "start"]
    calls.clear()
    execute(agent, "validate-all", name="x")
    assert [c for c, _ in calls] == ["validate"]
    assert calls[0][1].check_level == 10  # unset means the full check for validate-all


@pytest.mark.parametrize("requested,level", [(None, 0), ("0", 0), ("10", 10), ("20", 10),
                                             ("15", 10), ("5", 0), ("junk", 0)])
def test_check_level_falls_back_to_the_next_lower_implemented(requested, level):
    agent, calls = make_agent()
    env = {} if requested is None else {"OCF_CHECK_LEVEL": requested}
    execute(agent, "monitor", env, name="x")
    assert calls[-1][1].check_level == level


def test_deadline_from_meta_timeout_keeps_a_margin():
    agent, calls = make_agent()
    execute(agent, "start", {"OCF_RESKEY_CRM_meta_timeout": "30000"}, name="x")
    ctx = calls[-1][1]
    assert ctx.timeout == 30.0 and 27.5 < ctx.deadline.left() <= 28.0
    execute(agent, "start", name="x")  # no meta timeout: the action's hint
    assert calls[-1][1].timeout == 20.0


def test_secrets_are_redacted_in_repr_and_listed():
    agent, calls = make_agent()
    execute(agent, "start", name="x", secret="hunter2")
    params = calls[-1][1].params
    assert "hunter2" not in repr(params) and params.secrets() == ("hunter2",)


def test_promotion_score_uses_crm_attribute(fp):
    fp.register(["crm_attribute", "--promotion", "-l", "reboot", "-v", "1000"])
    fp.register(["crm_attribute", "--promotion", "-l", "reboot", "-D"])
    agent, _ = make_agent(start=lambda ctx: (ctx.set_promotion_score(1000),
                                             ctx.clear_promotion_score())[0])
    assert execute(agent, "start", name="x")[0] == OCF.SUCCESS
    assert fp.call_count(["crm_attribute", "--promotion", "-l", "reboot", "-v", "1000"]) == 1
    assert fp.call_count(["crm_attribute", "--promotion", "-l", "reboot", "-D"]) == 1


def test_promotion_score_failure_is_an_error(fp):
    fp.register(["crm_attribute", fp.any()], returncode=1, stderr="Could not connect")
    agent, _ = make_agent(start=lambda ctx: ctx.set_promotion_score(5))
    code, _, err = execute(agent, "start", name="x")
    assert code == OCF.ERR_GENERIC and reasons(err) == ["cannot set promotion score 5: Could not connect"]


def test_notify_variables_parse_into_one_object():
    prefix = "OCF_RESKEY_CRM_meta_notify_"
    notify = Notify({
        prefix + "type": "pre", prefix + "operation": "promote",
        prefix + "promote_resource": "part:1", prefix + "promote_uname": "node2",
        prefix + "master_resource": "part:0", prefix + "master_uname": "node1",  # legacy names
        prefix + "active_resource": "part:0 part:1", prefix + "active_uname": "node1 node2",
        prefix + "inactive_resource": "", prefix + "all_uname": "node1 node2",
    })
    assert notify.key == "pre-promote"
    assert notify.promote == [("part:1", "node2")]
    assert notify.promoted == [("part:0", "node1")]
    assert notify.unames("active") == ["node1", "node2"]
    assert notify.inactive == [] and notify.stop == []
    assert notify.all_unames == ["node1", "node2"]


def test_declaring_a_parameter_twice_is_refused():
    with pytest.raises(TypeError):
        Agent("bad", version="1", shortdesc="", longdesc="",
              params=(Param("a", "x"), Param("a", "y")),
              actions=(Action("start", None, 1), Action("stop", None, 1), Action("monitor", None, 1)))


def test_codes_enumerate_and_convert():
    assert OCF(7) is OCF.NOT_RUNNING and OCF.NOT_RUNNING.name == "NOT_RUNNING"
    assert OCF.RUNNING_PROMOTED == 8 and isinstance(OCF.SUCCESS, int)
    assert [c.name for c in OCF][:3] == ["SUCCESS", "ERR_GENERIC", "ERR_ARGS"]
    with pytest.raises(ValueError):
        OCF(42)


@pytest.mark.parametrize("instance, name", [("partition:0", "partition"), ("partition:12", "partition"),
                                            ("data", "data")])
def test_the_promotion_score_is_read_under_the_name_the_attribute_manager_stores(
        monkeypatch, instance, name):
    """Pacemaker stores a clone instance's score as master-<resource>; crm_attribute -G
    reads the CIB and must be asked for the resource, not the instance (the lab: read as
    partition:0, every recurring monitor found no score and wrote it again)."""
    from hapack.command import Result
    seen = []

    def run(self, argv, **kwargs):
        seen.append((argv, kwargs["env"]["OCF_RESOURCE_INSTANCE"]))
        return Result(argv, 0, "1000\n", "")
    monkeypatch.setattr(Context, "run", run)
    got = []
    agent, _ = make_agent(start=lambda ctx: got.append(ctx.promotion_score()))
    assert execute(agent, "start", env={"OCF_RESOURCE_INSTANCE": instance}, name="x")[0] == 0
    assert got == ["1000"]
    assert seen == [(["crm_attribute", "--promotion", "-l", "reboot", "-G", "-q"], name)]
