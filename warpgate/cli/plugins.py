"""``warpgate plugins list|hooks|check``: what is installed and whether it is sound."""

from __future__ import annotations

import argparse
import inspect
import json
from typing import Any

from warpgate.errors import PluginError
from warpgate.plugin import docs as hookdocs
from warpgate.plugin import spec as hookspec
from warpgate.plugin.manager import WarpgatePluginManager, make_plugin_manager
from warpgate.plugin.types import ROLES


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "plugins",
        help="list, describe and check installed plugins",
        description="Inspect the plugins warpgate loads from the 'warpgate' entry-point group.",
    )
    sub = parser.add_subparsers(dest="plugins_command", metavar="SUBCOMMAND", required=True)
    lst = sub.add_parser("list", help="installed plugins: status, roles and hooks")
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    lst.set_defaults(func=cmd_list)
    hooks = sub.add_parser("hooks", help="every hook a plugin can implement")
    hooks.add_argument("--json", action="store_true", help="machine-readable output")
    hooks.set_defaults(func=cmd_hooks)
    check = sub.add_parser(
        "check", help="load every plugin and validate it; non-zero exit on problems"
    )
    check.set_defaults(func=cmd_check)


def describe_plugins(pm: WarpgatePluginManager) -> list[dict[str, Any]]:
    """One dict per plugin: name, distribution, version, status, roles, hooks."""
    provided: dict[str, dict[str, list[str]]] = {}
    for role in ROLES:
        try:
            providers = pm.providers(role)
        except PluginError:
            continue
        for info in providers.values():
            provided.setdefault(info.plugin, {}).setdefault(role, []).append(info.name)
    rows = []
    for record in sorted(pm.records.values(), key=lambda r: (not r.builtin, r.name)):
        rows.append(
            {
                "name": record.name,
                "distribution": record.distribution,
                "version": record.version,
                "status": record.status,
                "builtin": record.builtin,
                "roles": provided.get(record.name, {}),
                "hooks": pm.hooks_of(record.name),
                "error": record.error,
            }
        )
    return rows


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        cells = [str(c).ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def cmd_list(args: argparse.Namespace) -> int:
    rows = describe_plugins(make_plugin_manager())
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = []
    for row in rows:
        roles = "; ".join(f"{role}: {', '.join(names)}" for role, names in row["roles"].items())
        hooks = ", ".join(h.removeprefix("warpgate_") for h in row["hooks"])
        table.append(
            [
                row["name"],
                f"{row['distribution']} {row['version']}".strip(),
                row["status"],
                roles or "-",
                hooks or ("-" if not row["error"] else row["error"]),
            ]
        )
    print(_table(table, ["plugin", "distribution", "status", "provides", "hooks"]))
    return 0


def describe_hooks(pm: WarpgatePluginManager) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in hookdocs.hook_names():
        fn = getattr(hookspec, name)
        caller = getattr(pm.hook, name)
        opts = caller.spec.opts if caller.spec else {}
        rows.append(
            {
                "name": name,
                "kind": hookdocs.kind_of(name),
                "async": inspect.iscoroutinefunction(fn),
                "firstresult": bool(opts.get("firstresult")),
                "signature": f"{name}{inspect.signature(fn)}",
                "summary": (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " "),
                "implemented_by": [impl.plugin_name for impl in reversed(caller.get_hookimpls())],
            }
        )
    order = {"phase": 0, "registration": 1, "configuration": 2, "observer": 3}
    phase_pos = {f"warpgate_{p}": i for i, p in enumerate(hookspec.PHASES)}
    rows.sort(key=lambda r: (order[r["kind"]], phase_pos.get(r["name"], 0), r["name"]))
    return rows


def cmd_hooks(args: argparse.Namespace) -> int:
    rows = describe_hooks(make_plugin_manager())
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [
        [
            r["name"],
            r["kind"],
            ("async" if r["async"] else "sync") + (", first" if r["firstresult"] else ""),
            ", ".join(r["implemented_by"]) or "-",
        ]
        for r in rows
    ]
    print(_table(table, ["hook", "kind", "call", "implemented by (call order)"]))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    pm = make_plugin_manager()
    problems: list[str] = []
    for record in pm.records.values():
        if record.status == "failed":
            problems.append(f"plugin {record.describe()} failed to load: {record.error}")
    for role in ROLES:
        try:
            pm.providers(role)
        except PluginError as exc:
            problems.append(str(exc))
    try:
        pm.check_pending()
    except Exception as exc:  # pluggy's own validation error
        problems.append(str(exc))
    active = sum(1 for r in pm.records.values() if r.status == "active")
    if problems:
        for problem in problems:
            print(f"FAIL {problem}")
        print(f"{len(problems)} problem(s); {active} plugin(s) loaded")
        return 1
    print(f"ok: {active} plugin(s) loaded, every hook implementation matches its spec")
    return 0
