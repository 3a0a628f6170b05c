"""docs/policy-guide.md's table of rules agrees with the rules the Jumpoint's code names."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STREAM_RULES = ("item host and remote ports", "max_connections")


def rules_in_code() -> set[str]:
    found: set[str] = set()
    for path in [*(ROOT / "jumpoint").rglob("*.py"), *(ROOT / "shared").glob("*.py")]:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r'rule=f?"([^"]+)"', text):
            found.add(re.sub(r"\{[^}]+\}", "NAME", match.group(1)))
        for match in re.finditer(r"\"((?:tunnels_restricted|approvals)\.[a-z_.]+)\"", text):
            found.add(match.group(1))
        for match in re.finditer(r'^RULE_\w+ = "([^"]+)"', text, flags=re.MULTILINE):
            found.add(match.group(1))  # rules named by a module constant (rule=RULE_USED)
        for match in re.finditer(r'^[A-Z_]+ = "(network\.[a-z_]+)"', text, flags=re.MULTILINE):
            found.add(match.group(1))  # the network tunnels' packet rules (jumpoint/network/)
    streams = (ROOT / "jumpoint" / "streams.py").read_text(encoding="utf-8")
    for rule in STREAM_RULES:
        assert f'"{rule}"' in streams, rule
        found.add(rule)
    return found


def rules_in_doc() -> set[str]:
    text = (ROOT / "docs" / "policy-guide.md").read_text(encoding="utf-8")
    section = text.split("## Rules", 1)[1]
    return set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE))


def test_every_rule_the_code_names_is_documented_and_the_reverse() -> None:
    code, doc = rules_in_code(), rules_in_doc()
    assert len(code) > 20
    assert code - doc == set(), "rules missing from docs/policy-guide.md"
    assert doc - code == set(), "documented rules the code never names"
