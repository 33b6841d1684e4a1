"""`kvm-manager alert ...` against a live server on the test driver."""

from __future__ import annotations

import json
import uuid
from typing import Any


def test_rule_list_shows_the_id_that_enable_and_remove_take(cli: Any, live_server: Any) -> None:
    """Issue 17's independent try, item 5: `alert rule list` had no id column, while the
    --help examples of enable/disable/remove name a rule by its id."""
    name = f"kvmm-t-al-{uuid.uuid4().hex[:8]}"
    # Scoped to the host's VM `test` with a threshold nothing reaches: it never fires.
    added = cli("--json", "alert", "rule", "add", name, "cpu_pct", "-t", "1000", "--vm", "test")
    assert added.exit_code == 0, added.stderr
    rule_id = json.loads(added.stdout)["id"]

    shown = cli("alert", "rule", "list")
    assert shown.exit_code == 0, shown.stderr
    header = next(line for line in shown.stdout.splitlines() if "NAME" in line)
    assert header.split()[1] == "ID", header  # the first column, after the border
    row = next(line for line in shown.stdout.splitlines() if name in line)
    assert row.split()[1] == str(rule_id), row

    assert cli("alert", "rule", "disable", str(rule_id)).exit_code == 0
    removed = cli("alert", "rule", "remove", str(rule_id))
    assert removed.exit_code == 0 and f"rule {rule_id} removed" in removed.stderr
    assert name not in cli("alert", "rule", "list").stdout
