"""Alert config records, read through the collector's config: defaults, `for`, every
problem at once, notifier types, and every docstring sample."""

from __future__ import annotations

import importlib.util
import re

import pytest
from alert_helpers import alerts_config

import fleetbeat.collector.alerts_config as alerts_config_module
from fleetbeat.collector import grouping, outbox, self_check, suppress
from fleetbeat.collector.alerts_config import AlertsSection
from fleetbeat.collector.config import parse_collector_config
from fleetbeat.collector.notifiers import NOTIFIERS, base, notifier_class
from fleetbeat.config.loader import parse_toml
from fleetbeat.errors import ConfigError

DOCUMENTED = [alerts_config_module, grouping, suppress, self_check, outbox, base,
              *(importlib.import_module(v.partition(":")[0]) for v in NOTIFIERS.values())]  # fmt: skip


def problems_of(doc: dict) -> list[str]:
    """Every problem parse_collector_config finds in a document ([] when it is valid)."""
    try:
        parse_collector_config(doc, "c.toml")
    except ConfigError as err:
        return err.problems
    return []


def test_defaults_are_the_issues():
    """Defaults: down/missing/flapping/reboot alert, grouped by site, 30s/5m/4h, resolved sent."""
    c = AlertsSection()
    assert c.on == ("down", "missing", "flapping", "reboot")
    assert c.group_by == ("site",)
    assert (c.group_wait, c.group_interval, c.repeat_interval) == (30.0, 300.0, 14400.0)
    assert c.send_resolved and c.parent_tag == "parent"


def test_a_rules_for_is_read():
    """A rule's `for` (a Python keyword) is read as its hold time; rules turn "rule" on."""
    c = alerts_config(rule=[{"name": "hot", "metric": "temp", "above": 80, "for": "5m"}])
    assert c.rule[0].hold == 300.0 and c.rule[0].severity == "warning"
    assert c.alerts_on("rule") and not AlertsSection().alerts_on("rule")


def test_every_problem_is_reported_at_once():
    """Bad kinds, a rule without threshold, a typo and a bad cron all come in one list."""
    items = problems_of({"collector": {
        "alerts": {"on": ["dwn"], "group_wiat": "1s",
                   "rule": [{"name": "hot", "metric": "temp", "for": "soon"},
                            {"name": "hot", "metric": "x", "below": 1}]},
        "maintenance": [{"name": "w", "start": "0 25 * * *", "duration": "1h"}],
        "self_check": {"every": "1m"},
    }})  # fmt: skip
    text = "\n".join(items)
    assert (
        'collector.alerts.on[0]: expected one of "down"' in text and 'did you mean "down"?' in text
    )
    assert 'collector.alerts.group_wiat: unknown key; did you mean "group_wait"?' in text
    assert "collector.alerts.rule[0]: set exactly one of above or below" in text
    assert "collector.alerts.rule[0].for: expected a duration" in text
    assert 'collector.alerts.rule[1].name: "hot" names two rules' in text
    assert "collector.maintenance[0].start: hour: '25'" in text
    assert "collector.maintenance[0].match: is required" in text
    assert "maintenance[0].start: is required" not in text  # it is there, only wrong
    assert "collector.self_check.url: is required" in text
    assert len(items) == 8, text


def test_an_unknown_notifier_type_lists_the_valid_ones():
    """type = "webhok" suggests "webhook" and names every registered type."""
    (line,) = problems_of({"collector": {"notify": [{"type": "webhok", "url": "http://x"}]}})
    assert '"webhook", "command", "apprise", "alertmanager"' in line
    assert 'did you mean "webhook"?' in line


def test_two_notifiers_of_one_type_need_names():
    """Two webhooks without names are an error; with names they are fine."""
    hooks = [{"type": "webhook", "url": "http://a"}, {"type": "webhook", "url": "http://b"}]
    assert any('two notifiers are named "webhook"' in p
               for p in problems_of({"collector": {"notify": hooks}}))  # fmt: skip
    named = [dict(h, name=f"hook{i}") for i, h in enumerate(hooks)]
    found = parse_collector_config({"collector": {"notify": named}}, "c.toml").collector.notify
    assert [n.label for n in found] == ["hook0", "hook1"]


def test_a_missing_apprise_is_a_config_error_naming_the_extra(monkeypatch):
    """Without the apprise library, type = "apprise" says which extra to install."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "apprise" else real(name, *a))  # fmt: skip
    found = problems_of({"collector": {"notify": [{"type": "apprise", "urls": ["json://x"]}]}})
    assert found == ['c.toml: collector.notify[0]: type "apprise" needs the Apprise '
                              'library: pip install "fleetbeat[notify]"']  # fmt: skip


def test_every_registry_entry_meets_the_protocol():
    """Each registered notifier has a Config subclassing NotifierConfig and a send method."""
    for kind in NOTIFIERS:
        cls = notifier_class(kind)
        assert issubclass(cls.Config, base.NotifierConfig), kind
        assert callable(getattr(cls, "send", None)), kind


@pytest.mark.parametrize("module", DOCUMENTED, ids=lambda m: m.__name__)
def test_docstring_samples_are_valid(module):
    """Every ```toml sample in the alert modules' docstrings validates (token files aside)."""
    blocks = re.findall(r"```toml\n(.*?)```", module.__doc__ or "", re.S)
    for block in blocks:
        assert problems_of(parse_toml(block, "sample")) == []
    if module not in (grouping, outbox):
        assert blocks, f"{module.__name__} has no sample"


def test_check_config_renders_the_tables_back_as_valid_toml(tmp_path):
    """The effective config of every alert table, printed back, parses to the same config."""
    from fleetbeat.config.render import table_lines

    token = tmp_path / "token"
    token.write_text("t")
    doc = {"collector": {
        "alerts": {"rule": [{"name": "hot", "metric": "temp", "above": 80, "for": "5m",
                             "match": {"tag": ["site:barn", "room:loft"]}}]},
        "notify": [{"type": "webhook", "url": "http://127.0.0.1:1/x", "token_file": str(token)},
                   {"type": "apprise", "urls": ["json://127.0.0.1:1/x"]}],
        "maintenance": [{"name": "w", "match": {"device": "pi-*"}, "start": "0 2 * * sun",
                         "duration": "2h"}],
        "self_check": {"url": "http://127.0.0.1:1/ping"},
    }}  # fmt: skip
    config = parse_collector_config(doc, "c.toml").collector
    text = "\n".join(table_lines("[collector]", config))
    assert "json://" not in text  # Apprise URLs hold secrets: masked
    again = parse_collector_config(parse_toml(text.replace('"********"', '["json://127.0.0.1:1/x"]'),
                                              "rendered"), "rendered").collector  # fmt: skip
    assert again == config
