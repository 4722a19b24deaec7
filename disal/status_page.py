"""The backend's status page (GET /) and learning-curve plot (GET /status/<project>/curve.png).

Why: Label Studio shows no model version and no training progress, so training is invisible to
the people labeling. This page renders, per project, what /health knows plus the queue and the
learning curve, as plain server-side HTML: no JavaScript framework, no CDN, nothing downloaded,
and a <meta refresh> as the only auto-refresh. It reads the model object (model.DisalModel) and
never changes anything; basic auth is the app's before_request, like every other route.
"""

from __future__ import annotations

import html
import io
import time
from typing import Any

from .learning_curve import METRIC, MIN_LABELS, LearningCurve
from .training.regimes import is_regime, make_regime

REFRESH_SECONDS = 5
QUEUE_ROWS = 10
STATE_WORDS = {  # what a person reads for a job state; an unknown state is shown as it arrives
    "idle": "idle: serving the current version",
    "queued": "queued: a job starts as soon as the running one ends",
    "fetching": "fetching tasks and annotations from Label Studio",
    "encoding": "encoding the tasks (texts, or images fetched from Label Studio) with the frozen encoder",
    "training": "training the head",
    "scoring": "scoring the unlabeled pool",
    "pushing": "pushing predictions to Label Studio",
    "tidying": "tidying: deleting old versions' predictions",
}
REGIMES = {"head": "frozen encoder + linear head", "mlp": "frozen encoder + one-hidden-layer head"}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _when(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return "never"
    ago = max(0.0, time.time() - float(ts))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(ts)))
    if ago < 120:
        return f"{stamp} ({ago:.0f} s ago)"
    if ago < 7200:
        return f"{stamp} ({ago / 60:.0f} min ago)"
    return f"{stamp} ({ago / 3600:.1f} h ago)"


def project_status(model: Any, project_id: int, entry: dict) -> dict:
    """Everything the page shows for one project: its /health entry plus the version and curve."""
    store = model.store(project_id)
    version = store.current()
    out: dict[str, Any] = {"project": project_id, "health": entry, "version": None,
                           "curve": LearningCurve(store.dir).points(), "queue": [], "hostname":
                           store.load_info().get("hostname")}
    if version is not None:
        meta = version.meta or {}
        out["version"] = {"name": version.name, "kind": version.kind, "round": version.round,
                          "regime": meta.get("regime") or "head", "labels": len(version.labels),
                          "created": meta.get("created"), "strategy": meta.get("strategy"),
                          "pool": len(version.priority), "accuracy": (meta.get("accuracy_estimate") or {}).get("accuracy"),
                          "task_type": version.spec.task_type, "encoder": meta.get("encoder")}
        out["queue"] = sorted(version.priority.items(), key=lambda kv: (kv[1], kv[0]))[:QUEUE_ROWS]
    return out


def _progress_html(entry: dict) -> str:
    state = str(entry.get("state") or "unknown")
    prog = entry.get("progress") or {}
    done, total = int(prog.get("done") or 0), int(prog.get("total") or 0)
    words = STATE_WORDS.get(state, state)
    count = f" {done}/{total}" if total else ""
    if total:
        bar = f'<progress class="bar" value="{done}" max="{total}"></progress>'
    elif state in ("idle",):
        bar = '<progress class="bar" value="1" max="1"></progress>'
    else:  # running with no count yet: an indeterminate bar
        bar = '<progress class="bar"></progress>'
    note = (entry.get("job") or {}).get("note")
    note_html = f'<div class="note">{_e(note)}</div>' if note else ""
    return (f'<div class="state" data-state="{_e(state)}"><span class="state-name">{_e(state)}{_e(count)}</span> '
            f'<span class="muted">{_e(words)}</span></div>{bar}{note_html}')


def _project_html(p: dict) -> str:
    pid = p["project"]
    entry = p["health"]
    v = p["version"]
    rows = []
    if v is None:
        rows.append(("model version", "none yet: the first queue is being built"))
    else:
        regime = REGIMES.get(v["regime"]) or (make_regime(v["regime"]).describe if is_regime(v["regime"] or "")
                                              else v["regime"])
        kind = "cold start (CoreSet diversity: fewer than 2 classes labeled)" if v["kind"] == "coldstart" else v["kind"]
        rows += [("model version", f'<code>{_e(v["name"])}</code>'),
                 ("regime", f'{_e(v["regime"])} <span class="muted">({_e(regime)})</span>'),
                 ("kind", _e(kind)), ("strategy", _e(v["strategy"] or "-")),
                 ("labels used", _e(v["labels"])), ("last round", _e(f'{v["round"]} at {_when(v["created"])}')),
                 ("project type", f'{_e(v["task_type"].replace("_", " "))} <span class="muted">(encoder '
                                  f'{_e(v["encoder"] or "-")})</span>'),
                 ("queue", _e(f'{v["pool"]} unlabeled tasks ranked'))]
        if v["accuracy"] is not None:
            rows.append(("accuracy estimate", _e(f'{100 * v["accuracy"]:.1f}%')))
    hidden = entry.get("hidden_cache") or {}
    if hidden.get("tasks"):  # top-N: the project's cached hidden states against their bound
        rows.append(("hidden-state cache", _e(f'{hidden["tasks"]:,} tasks, {hidden["mb"]:,.1f} MB of '
                                              f'{hidden["max_mb"]:,} MB (HIDDEN_CACHE_MAX_MB)')))
    if entry.get("regime_note"):
        rows.append(("regime note", f'<span class="muted">{_e(entry["regime_note"])}</span>'))
    skipped = entry.get("skipped_tasks") or {}
    if skipped.get("count"):  # unreadable inputs (a broken image): named, each with its reason
        shown = "; ".join(f'task {t["task"]}: {t["reason"]}' for t in (skipped.get("tasks") or [])[:5])
        more = f' (and {skipped["count"] - 5} more in /health)' if skipped["count"] > 5 else ""
        rows.append(("skipped tasks", f'<span class="error">{_e(skipped["count"])}</span> '
                                      f'<span class="muted">{_e(shown + more)}</span>'))
    if entry.get("error"):
        rows.append(("last error", f'<span class="error">{_e(entry["error"])}</span>'))
    info = "".join(f"<tr><th>{k}</th><td>{val}</td></tr>" for k, val in rows)
    base = (p.get("hostname") or "").rstrip("/")
    queue_rows = []
    for rank, (tid, score) in enumerate(p["queue"], start=1):
        link = (f'<a href="{_e(base)}/projects/{pid}/data?task={int(tid)}">{int(tid)}</a>'
                if base.startswith(("http://", "https://")) else str(int(tid)))
        queue_rows.append(f'<tr><td>{rank}</td><td>{link}</td><td>{score:.4f}</td></tr>')
    queue = ("<table class=\"queue\"><tr><th>#</th><th>task</th><th>score</th></tr>" + "".join(queue_rows)
             + "</table>") if queue_rows else '<p class="muted">no ranked tasks</p>'
    pts = p["curve"]
    if pts:
        last = pts[-1]
        rounds = f"{len(pts)} round" + ("s" if len(pts) != 1 else "")
        curve_caption = f'{rounds}; latest: {100 * last["accuracy"]:.1f}% at {last["labels"]} labels'
    else:
        curve_caption = f"no estimate yet: needs {MIN_LABELS} labels in 2 classes"
    return f"""
<section class="project" id="project-{pid}">
  <h2>Project {pid}</h2>
  {_progress_html(entry)}
  <div class="cols">
    <div><table class="info">{info}</table></div>
    <div><h3>Top of the queue</h3>
      <p class="muted">score = queue priority, lower = labeled first (rank / pool size; not a confidence)</p>
      {queue}</div>
    <div><h3>Learning curve</h3>
      <img class="curve" alt="learning curve of project {pid}" src="status/{pid}/curve.png?t={int(time.time())}">
      <p class="muted">{_e(curve_caption)}<br>{_e(METRIC)}</p></div>
  </div>
</section>"""


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{margin:0 0 .2rem}h2{margin:.2rem 0 .6rem}h3{margin:.2rem 0}
.muted{color:#666;font-size:.9em}.error{color:#b00020}
.project{background:#fff;border:1px solid #ddd;border-radius:8px;padding:1rem 1.2rem;margin:1rem 0}
.state{font-size:1.1em;margin-bottom:.3rem}.state-name{font-weight:600}
.bar{width:100%;height:1.1rem}.note{color:#444;margin-top:.2rem}
.cols{display:flex;flex-wrap:wrap;gap:1.5rem;margin-top:.8rem}.cols>div{flex:1 1 300px}
table{border-collapse:collapse}th,td{text-align:left;padding:.15rem .6rem .15rem 0;vertical-align:top}
.queue td,.queue th{border-bottom:1px solid #eee;padding-right:1.2rem}
.curve{max-width:100%;border:1px solid #eee}code{font-size:.95em}
"""


def render_page(model: Any) -> str:
    """The whole status page as HTML (every project the backend knows), from model.health()."""
    health = model.health()
    projects = [project_status(model, int(pid), entry) for pid, entry in (health.get("projects") or {}).items()]
    body = "".join(_project_html(p) for p in projects) or (
        '<p class="muted">No project yet: connect this backend to a Label Studio project '
        "(Settings &rarr; Model &rarr; Connect model).</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>DISAL backend status</title><style>{CSS}</style></head>
<body>
<h1>DISAL backend</h1>
<p class="muted">strategy {_e(health.get("strategy"))} &middot; encoder {_e(health.get("encoder"))} &middot;
up {_e(health.get("uptime_s"))} s &middot; refreshes every {REFRESH_SECONDS} s &middot;
JSON: <a href="health">/health</a></p>
{body}
</body></html>"""


def render_curve_png(points: list[dict], title: str = "") -> bytes:
    """The learning curve (accuracy estimate against labels) as a PNG, with matplotlib's Agg canvas.

    The object API (Figure + FigureCanvasAgg), not pyplot: pyplot keeps global state and is not
    safe in the web server's request threads.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(5.0, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if points:
        pts = sorted(points, key=lambda p: (p["labels"], p.get("at", 0)))
        xs = [p["labels"] for p in pts]
        ys = [100 * p["accuracy"] for p in pts]
        ax.plot(xs, ys, marker="o", color="#1f77b4", linewidth=1.5, markersize=4)
        ax.set_ylim(0, 100)
        ax.set_xlim(0, max(xs) * 1.05 + 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.text(0.5, 0.5, f"no estimate yet\n(needs {MIN_LABELS} labels in 2 classes)", ha="center",
                va="center", transform=ax.transAxes, color="#666")
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("labels")
    ax.set_ylabel("accuracy estimate (%)")
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def curve_png_for(model: Any, project_id: int) -> bytes:
    """The PNG of one project's curve.json."""
    return render_curve_png(LearningCurve(model.store(project_id).dir).points(), f"project {project_id}")
