"""bench/plot.py: the SVG charts the benchmarks write (pure: no engine, no cluster)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from bench import plot

SVG = "{http://www.w3.org/2000/svg}"


def polylines(document: str) -> list[list[tuple[float, float]]]:
    root = ET.fromstring(document)
    return [
        [tuple(map(float, xy.split(","))) for xy in line.attrib["points"].split()]  # type: ignore[misc]
        for line in root.iter(f"{SVG}polyline")
    ]


@pytest.mark.parametrize(("value", "end"), [(0.3, 0.5), (7.45, 10), (20, 20), (21, 25), (120, 200), (0, 1)])
def test_an_axis_ends_at_a_round_number_at_or_above_the_data(value: float, end: float) -> None:
    assert plot.nice_ceiling(value) == pytest.approx(end)


def test_each_series_is_a_line_through_its_points_in_order_of_x() -> None:
    panel = plot.Panel(
        "time",
        "fills",
        "s",
        [plot.Series("full", [(20, 40), (5, 10), (10, 20)]), plot.Series("incremental", [(5, 2), (20, 8)])],
    )
    lines = polylines(plot.svg([panel], "title"))
    assert [len(line) for line in lines] == [3, 2]
    full = lines[0]
    assert [x for x, _ in full] == sorted(x for x, _ in full)
    # SVG's y grows downward: the highest value is the topmost point.
    assert full[-1][1] < full[0][1]
    # Points on a line through the origin stay on one straight line on the chart.
    (x0, y0), (x1, y1), (x2, y2) = full
    assert (y1 - y0) / (x1 - x0) == pytest.approx((y2 - y1) / (x2 - x1), rel=0.02)


def test_a_limit_is_a_dashed_line_with_its_label_and_the_axis_reaches_it() -> None:
    panel = plot.Panel("memory", "fills", "GB", [plot.Series("peak", [(5, 0.4), (100, 3.1)])], [plot.Limit("8 GB", 8)])
    document = plot.svg([panel], "title")
    root = ET.fromstring(document)
    dashed = [line for line in root.iter(f"{SVG}line") if line.attrib.get("stroke-dasharray") == "6,4"]
    assert len(dashed) == 1
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "8 GB" in texts
    assert "10" in texts  # the y axis ends above the limit, not at the data's 3.1


def test_panels_sit_side_by_side_and_share_a_legend_colour_per_label() -> None:
    series = [plot.Series("served", [(1, 1), (2, 2)]), plot.Series("embedded", [(1, 2), (2, 3)])]
    document = plot.svg([plot.Panel("a", "x", "y", series), plot.Panel("b", "x", "y", series[::-1])], "title <&>")
    root = ET.fromstring(document)  # the title's markup characters are escaped
    assert int(root.attrib["width"]) == 2 * plot.WIDTH
    strokes = [line.attrib["stroke"] for line in root.iter(f"{SVG}polyline")]
    assert strokes[0] == strokes[3] and strokes[1] == strokes[2] and strokes[0] != strokes[1]
