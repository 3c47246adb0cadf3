"""The dashboard's HTML: small server-rendered pages, readable on a phone.

Every value that reaches a page is escaped here (``esc``); the pages carry no inline script or
style (the Content-Security-Policy forbids them), only ``data-`` attributes that
``static/dashboard.js`` reads. Forms post to ``/do/<command>`` with the session's CSRF token.
"""
from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

NAV = (("/", "Node"), ("/channels", "Channels"), ("/payments", "Payments"), ("/meters", "Meters"),
       ("/valves", "Valves"), ("/microgrid", "Microgrid"), ("/ledger", "Ledger"), ("/tools", "Tools"))
UPLOT = "uPlot-1.6.32"


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def page(title: str, path: str, body: str, *, csrf: str = "", flash: str = "", node_name: str = "") -> str:
    nav = "".join(f'<a href="{href}"{" class=on" if href == path else ""}>{esc(label)}</a>'
                  for href, label in NAV)
    logout = (f'<form method="post" action="/logout" class="logout">{csrf_field(csrf)}'
              '<button>Log out</button></form>') if csrf else ""
    note = f'<p class="flash" id="flash">{esc(flash)}</p>' if flash else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · {esc(node_name or "Eschaton")}</title>
<link rel="stylesheet" href="/static/{UPLOT}.min.css">
<link rel="stylesheet" href="/static/dashboard.css">
<script src="/static/{UPLOT}.iife.min.js" defer></script>
<script src="/static/dashboard.js" defer></script>
</head><body data-csrf="{esc(csrf)}">
<header><strong>{esc(node_name or "Eschaton")}</strong><nav>{nav}</nav>{logout}</header>
<main><h1>{esc(title)}</h1>{note}{body}
<section class="live"><h2>Live</h2><ol id="live"></ol></section></main>
</body></html>"""


def csrf_field(csrf: str) -> str:
    return f'<input type="hidden" name="csrf" value="{esc(csrf)}">'


def login_page(error: str = "", *, token_only: bool = False) -> str:
    hint = ("No dashboard password is set on this node: log in with the API token "
            "(<code>api.token</code> in the node's data directory), or set one with "
            "<code>eschaton dashboard password</code>.") if token_only else \
        "The dashboard password of this node, or its API token."
    err = f'<p class="error" id="error">{esc(error)}</p>' if error else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · Eschaton</title><link rel="stylesheet" href="/static/dashboard.css"></head>
<body><main class="login"><h1>Eschaton</h1>{err}
<form method="post" action="/login" id="login">
<label>Password <input type="password" name="password" id="password" autocomplete="current-password"
 autofocus required></label><button id="login-button">Log in</button></form><p class="hint">{hint}</p>
</main></body></html>"""


def table(rows: Sequence[Mapping[str, Any]], cols: Sequence[tuple[str, str]], *, row_id: str = "",
          key: str = "", extra: Any = None, empty: str = "none") -> str:
    """``cols``: (key, heading); rows get the id ``<row_id>-<row[key]>`` (``key`` defaults to
    name, channel or id); ``extra(row)`` adds a last cell (actions)."""
    if not rows:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(h)}</th>" for _, h in cols) + ("<th></th>" if extra else "")
    body = []
    for r in rows:
        k = r.get(key) if key else (r.get("name") or r.get("channel") or r.get("id"))
        rid = f' id="{esc(row_id)}-{esc(k)}"' if row_id else ""
        cells = "".join(f'<td data-k="{esc(c)}">{fmt(r.get(c))}</td>' for c, _ in cols)
        body.append(f"<tr{rid}>{cells}{f'<td>{extra(r)}</td>' if extra else ''}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return esc(f"{v:.6g}")
    if isinstance(v, list | tuple):
        return esc(", ".join(str(x) for x in v))
    if isinstance(v, dict):
        return kv(v)
    s = str(v) if v is not None else ""
    return f'<span title="{esc(s)}">{esc(s[:16])}…</span>' if len(s) == 64 and _hex(s) else esc(s)


def _hex(s: str) -> bool:
    return all(c in "0123456789abcdef" for c in s)


def kv(d: Mapping[str, Any]) -> str:
    """A generic view of a JSON object (nested objects and lists of objects as tables)."""
    rows = []
    for k, v in d.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            keys = list(dict.fromkeys(k2 for x in v for k2 in x))
            cell = table(v, [(k2, k2) for k2 in keys])
        else:
            cell = fmt(v)
        rows.append(f"<tr><th>{esc(k)}</th><td>{cell}</td></tr>")
    return f'<table class="kv">{"".join(rows)}</table>'


def action(command: str, csrf: str, fields: Mapping[str, Any], label: str, *, confirm: str = "",
           inputs: Iterable[tuple[str, str, str]] = (), back: str = "", cls: str = "") -> str:
    """A form that runs ``command``; ``inputs``: (name, type, placeholder) the operator fills in."""
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in fields.items())
    # "decimal": a number with a fraction (a measured quantity); "number" is whole.
    typed = "".join(f'<input name="{esc(n)}" type="{"number" if t == "decimal" else esc(t)}" placeholder="{esc(p)}"'
                    f' required{" inputmode=numeric" if t == "number" else ""}'
                    f'{" step=any inputmode=decimal" if t == "decimal" else ""}>' for n, t, p in inputs)
    conf = f' data-confirm="{esc(confirm)}"' if confirm else ""
    extra = '<input type="hidden" name="confirm" value="">' if confirm else ""
    bk = f'<input type="hidden" name="back" value="{esc(back)}">' if back else ""
    return (f'<form method="post" action="/do/{esc(command)}" class="act {esc(cls)}"{conf}>'
            f"{csrf_field(csrf)}{hidden}{extra}{bk}{typed}<button>{esc(label)}</button></form>")


def ago(at_ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at_ms / 1000))
