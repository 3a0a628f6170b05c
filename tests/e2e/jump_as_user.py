"""Run the real `jump` command as an ordinary user: imported as root, then the credentials dropped.

C{python -m tests.e2e.jump_as_user --uid U --gid G --groups G1,G2 -- ARGS}
imports the console's code while still root (the test machine's Python may
live where a throwaway user cannot read, such as under C{/root}), drops to
those credentials (supplementary groups first, then the gid, then the uid:
no way back), and runs C{jump ARGS} in the same process: everything
C{jump} does from there on, it does as that user, exactly as a user who
started it would (it holds no capability, so a network item needs the
network service).
"""

from __future__ import annotations

import argparse
import encodings.ascii
import encodings.idna
import encodings.latin_1
import encodings.utf_8  # noqa: F401
import importlib
import os
import pkgutil

import console
import console.cli


def _import_everything() -> None:
    """Every console module, and what they import lazily (the channel, the reactor)."""
    for module in pkgutil.walk_packages(console.__path__, "console."):
        importlib.import_module(module.name)
    for name in (
        "twisted.internet.reactor",
        "twisted.internet.ssl",
        "twisted.internet._sslverify",
        "twisted.internet.endpoints",
        "twisted.protocols.tls",
        "twisted.internet.unix",
        "service_identity.pyopenssl",
        "idna",
        "uuid",
    ):
        importlib.import_module(name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--gid", type=int, required=True)
    parser.add_argument("--groups", default="")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    _import_everything()
    os.setgroups([int(group) for group in options.groups.split(",") if group])
    os.setgid(options.gid)
    os.setuid(options.uid)
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    console.cli.main(args)


if __name__ == "__main__":
    main()
