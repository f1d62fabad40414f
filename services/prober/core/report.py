"""An HTML report of probed items: dataset numbers and, per item, an SVG plot of the
model's confidence in its final answer before the first step and after each step."""

from __future__ import annotations

import html
import json

from services.prober.core.trajectory import Trajectory

WIDTH, HEIGHT, PAD = 320, 120, 24


def trajectory_svg(trajectory: Trajectory) -> str:
    """Confidence in the final answer per step (a line), mind changes marked in red."""
    curve = trajectory.final_confidence
    span = max(1, len(curve) - 1)

    def xy(k: int, p: float) -> tuple[float, float]:
        return (PAD + k * (WIDTH - 2 * PAD) / span, HEIGHT - PAD - p * (HEIGHT - 2 * PAD))

    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(k, p) for k, p in enumerate(curve)))
    marks = "".join(
        f'<circle cx="{xy(k, curve[k])[0]:.1f}" cy="{xy(k, curve[k])[1]:.1f}" r="4" '
        f'fill="#c0392b"><title>mind change at step {k}</title></circle>'
        for k in trajectory.change_positions
    )
    axis = (
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" '
        'stroke="#999"/>'
        f'<text x="{PAD}" y="{HEIGHT - 6}" font-size="10">step 0</text>'
        f'<text x="{WIDTH - PAD - 30}" y="{HEIGHT - 6}" font-size="10">step {span}</text>'
        f'<text x="2" y="{PAD}" font-size="10">1.0</text>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}">'
        f'{axis}<polyline fill="none" stroke="#2c7fb8" stroke-width="2" '
        f'points="{points}"/>{marks}</svg>'
    )


def html_report(
    title: str, summary: dict, items: list[dict], trajectories: list[Trajectory]
) -> str:
    rows = []
    for item, t in zip(items, trajectories, strict=True):
        verdict = "—" if t.correct is None else ("correct" if t.correct else "wrong")
        flag = " ⚠ unstable reasoning" if t.flagged else ""
        rows.append(
            f"<tr><td>{html.escape(item['question'][:200])}</td>"
            f"<td>{html.escape(t.final_answer)} ({verdict}){flag}</td>"
            f"<td>{'yes' if t.early_answer else 'no'}</td><td>{t.mind_changes}</td>"
            f"<td>{trajectory_svg(t)}</td></tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif}}"
        "td{vertical-align:top;padding:4px;border-bottom:1px solid #ddd}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><pre>{html.escape(json.dumps(summary, indent=2))}</pre>"
        "<table><tr><th>question</th><th>final answer</th><th>early answer</th>"
        "<th>mind changes</th><th>confidence in the final answer by step</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
