"""The report page's embedded chart data: no class, column or run name can break out of its <script>."""

import json
import re

from report_browser import CHROMIUM, render

from ember.report.markup import Page, script_json

HOSTILE = ["<!--<script>", "</script><b>x</b>", "a & b > c", "line\u2028sep\u2029end", "plain"]


def _blob(html: str) -> str:
    return re.search(r'<script type="application/json" id="ember-data">(.*?)</script>', html, re.DOTALL).group(1)


def test_script_json_leaves_no_markup_and_round_trips():
    text = script_json({"labels": HOSTILE})
    assert not any(c in text for c in "<>&\u2028\u2029")
    assert json.loads(text) == {"labels": HOSTILE}


def test_hostile_class_names_neither_break_the_page_nor_blank_its_charts(tmp_path):
    page = Page("<!--<script>")
    spec = {
        "type": "bars",
        "labels": HOSTILE,
        "series": [{"name": "<!--<script>", "values": [1, 2, 3, 4, 5]}],
        "xlabel": "class",
        "ylabel": "count",
    }
    figures = page.chart(spec, "<!--<script> per class") + page.chart({**spec, "labels": ["ok"] * 5}, "a second chart")
    html = page.render("<header></header>", [("s", "<!--<script>", figures)])
    blob = _blob(html)
    assert "<!--" not in blob and "<script" not in blob and "</" not in blob
    assert json.loads(blob)["charts"]["c1"]["labels"] == HOSTILE
    assert html.count("<script") == 3  # the error catcher, the data, report.js: nothing injected
    if CHROMIUM:  # the browser check: both charts drawn, no error
        path = tmp_path / "hostile.html"
        path.write_text(html)
        shown = render(path, 800, 600)
        assert shown.charts == 2 and shown.rendered == 2 and shown.errors == 0, shown
