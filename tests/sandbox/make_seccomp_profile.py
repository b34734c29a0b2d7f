"""Rebuild sandbox/seccomp_profile.json from the engine's upstream default profile.

Usage: python tests/sandbox/make_seccomp_profile.py UPSTREAM_default.json > \
           sandbox/seccomp_profile.json

UPSTREAM is moby's profiles/seccomp/default.json. The result keeps every rule of the default
except that (1) no allow rule, conditional on capabilities or not, names a call in
sandbox.seccomp.BLOCKED_SYSCALLS, (2) `clone` is allowed only without namespace flags and
`clone3` answers ENOSYS whatever capabilities the container has, and (3) one explicit EPERM
rule lists the blocked calls. test_seccomp_profile.py checks those properties on the shipped
file, so a hand edit that breaks them fails the tests.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from sandbox.seccomp import BLOCKED_SYSCALLS

NOTE = "switchboard: agent code may not create or enter namespaces, mount, or reach these"


def harden(profile: dict[str, Any]) -> dict[str, Any]:
    """Apply the three changes above to a parsed upstream profile."""
    blocked = set(BLOCKED_SYSCALLS)
    rules: list[dict[str, Any]] = []
    for rule in profile["syscalls"]:
        if rule.get("comment") == NOTE:  # our own block rule, from an earlier run: redone below
            continue
        rule = dict(rule)
        names = list(rule["names"])
        if "clone" in names or "clone3" in names:
            if names not in (["clone"], ["clone3"]):  # the CAP_SYS_ADMIN catch-all: drop them
                names = [n for n in names if n not in ("clone", "clone3")]
            else:  # the masked clone rule and clone3's ENOSYS: no longer lifted by caps
                excludes = {k: v for k, v in rule.get("excludes", {}).items() if k != "caps"}
                rule.pop("excludes", None)
                if excludes:
                    rule["excludes"] = excludes
        if rule["action"] != "SCMP_ACT_ERRNO":
            names = [n for n in names if n not in blocked]
        if not names:
            continue
        rule["names"] = names
        rules.append(rule)
    rules.append(
        {
            "names": list(BLOCKED_SYSCALLS),
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
            "comment": NOTE,
        }
    )
    return {**profile, "syscalls": rules}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        upstream = json.load(f)
    json.dump(harden(upstream), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
