"""A PNG bar chart of a sitting's latencies, drawn with Pillow (no plotting library needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 900, 460, 70, 110, 50
COLOURS = ["#4c72b0", "#55a868", "#8172b2", "#c44e52", "#dd8452"]


def scenarios(report: dict) -> list[tuple[str, list[float]]]:
    """(label, latencies in ms) for each latency scenario of the sitting."""
    rows = report["rows"]
    sqlite, cosmos = rows["one_at_a_time_sqlite"], rows["one_at_a_time_cosmos"]
    found = [("raw model", sqlite["raw_ms"]), ("end to end\nSQLite", sqlite["end_to_end_ms"])]
    if cosmos:
        found.append(("end to end\nCosmos emulator", cosmos["end_to_end_ms"]))
    found.append(("cache hit\n(same image)", sqlite["cache_hit_ms"]))
    return found


def latency_by_scenario(report: dict, path: Path) -> None:
    bars = scenarios(report)
    top = max(max(values) for _, values in bars) * 1.15
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    plot_height = HEIGHT - TOP - BOTTOM

    def y(ms: float) -> float:
        return TOP + plot_height * (1 - ms / top)

    draw.text((LEFT, 15), f"CAP latency by scenario ({report['mode']} mode, {report['model']}): "
              "bar = median, line = p1 to p99, dots = runs", fill="black")
    for tick in np.linspace(0, top, 6):
        draw.line([(LEFT - 5, y(tick)), (WIDTH - 20, y(tick))], fill="#dddddd")
        draw.text((5, y(tick) - 6), f"{tick:,.0f} ms", fill="black")
    slot = (WIDTH - LEFT - 20) / len(bars)
    for index, (label, values) in enumerate(bars):
        centre = LEFT + slot * (index + 0.5)
        median = float(np.median(values))
        low, high = np.percentile(values, [1, 99])
        draw.rectangle([centre - slot * 0.3, y(median), centre + slot * 0.3, y(0)], fill=COLOURS[index % len(COLOURS)])
        draw.line([(centre, y(low)), (centre, y(high))], fill="black", width=2)
        for value in values:
            draw.ellipse([centre + slot * 0.33 - 2, y(value) - 2, centre + slot * 0.33 + 2, y(value) + 2], fill="black")
        draw.text((centre - slot * 0.3, y(median) - 16), f"{median:,.1f} ms", fill="black")
        draw.multiline_text((centre - slot * 0.35, HEIGHT - BOTTOM + 10), label, fill="black")
    image.save(path)
