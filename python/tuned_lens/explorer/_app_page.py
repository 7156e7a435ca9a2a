"""The local app's own page: a form (prompt, a second prompt to compare, a file of prompts,
lenses, statistic) that asks the server for an explorer and shows it in a sandboxed iframe."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .server import ExplorerApp

__all__ = ["APP_PAGE"]

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'self'; \
script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:">
<title>tuned-lens explorer · {model}</title>
<style>
body {{ font: 13px system-ui, sans-serif; margin: 0; padding: 10px 14px; }}
textarea {{ width: 100%; box-sizing: border-box; font: 13px ui-monospace, monospace; }}
#form {{ display: grid; grid-template-columns: 1fr 1fr; gap: 8px 14px; }}
#controls {{ grid-column: 1 / 3; display: flex; gap: 14px; align-items: center; flex-wrap: wrap; }}
#status {{ color: #b3261e; min-height: 1.2em; margin: 6px 0; }}
#view {{ width: 100%; height: 780px; border: 1px solid #ccc; }}
</style></head>
<body>
<h1 style="font-size:15px">tuned-lens explorer · {model}</h1>
<form id="form">
<label>prompt<textarea id="prompt" rows="3" maxlength="{max_chars}"></textarea></label>
<label>second prompt to compare (optional)<textarea id="compare" rows="3" \
maxlength="{max_chars}"></textarea></label>
<div id="controls">
<span>lenses {lenses}</span>
<label>statistic <select id="stat">
<option value="entropy">entropy</option><option value="cross_entropy">cross entropy</option>
<option value="forward_kl">forward KL</option><option value="max_prob">max probability</option>
<option value="target_rank">rank of the target</option></select></label>
<label>or a file of prompts (one per line) <input id="file" type="file" accept=".txt,text/plain">\
</label>
<button id="go" type="submit">explore</button>
<span id="timing"></span>
<span>at most {max_tokens} tokens per prompt, {max_prompts} prompts</span>
</div></form>
<div id="status" role="status"></div>
<iframe id="view" title="explorer" sandbox="allow-scripts allow-downloads"></iframe>
<script>
(function () {{
  "use strict";
  var $ = function (id) {{ return document.getElementById(id); }};
  function prompts() {{
    var f = $("file").files[0];
    if (f) return f.text().then(function (t) {{
      return t.split(/\\r?\\n/).filter(function (l) {{ return l.trim(); }});
    }});
    var list = [$("prompt").value];
    if ($("compare").value.trim()) list.push($("compare").value);
    return Promise.resolve(list);
  }}
  $("form").addEventListener("submit", function (e) {{
    e.preventDefault();
    var lenses = Array.from(document.querySelectorAll("input[name=lens]:checked"))
      .map(function (c) {{ return c.value; }});
    var t0 = performance.now();
    $("status").textContent = ""; $("timing").textContent = "…";
    prompts().then(function (list) {{
      return fetch("/api/explore", {{ method: "POST", headers: {{ "Content-Type": "application/json" }},
        body: JSON.stringify({{ prompts: list, lenses: lenses, stat: $("stat").value }}) }});
    }}).then(function (r) {{ return r.json(); }}).then(function (answer) {{
      if (answer.error) {{ $("status").textContent = answer.error; $("timing").textContent = ""; return; }}
      $("view").srcdoc = answer.html;
      $("timing").textContent = Math.round(performance.now() - t0) + " ms";
    }}, function (err) {{ $("status").textContent = String(err); }});
  }});
}})();
</script></body></html>
"""


def APP_PAGE(app: ExplorerApp) -> str:  # noqa: N802 - a page template
    """The app's form page for ``app`` (its lenses and limits)."""
    boxes = " ".join(
        f'<label><input type="checkbox" name="lens" value="{html.escape(name)}"'
        f"{' checked' if i == 0 else ''}> {html.escape(name)}</label>"
        for i, name in enumerate(app.lenses)
    )
    return _PAGE.format(
        model=html.escape(app.model_name or "model"),
        lenses=boxes,
        max_tokens=app.limits.max_tokens,
        max_prompts=app.limits.max_prompts,
        max_chars=16 * app.limits.max_tokens,
    )
