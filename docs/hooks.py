"""MkDocs hook: the tables of data sources and models are generated from ember's registries at
build time, so the site lists exactly what `ember config data=NAME` and `ember models` know."""

import inspect


def _first_line(fn) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.splitlines()[0].replace("|", "\\|") if doc else ""


def _keys(registry, name) -> str:
    options = registry.options(name)
    return ", ".join(f"`{k}`" for k in options) or "–"


def data_table() -> str:
    from ember.data import DATA

    rows = [f"| `{n}` | {_first_line(DATA.get(n))} | {_keys(DATA, n)} |" for n in DATA.names()]
    return "| source | what it is | its own keys (`data.KEY`) |\n| --- | --- | --- |\n" + "\n".join(rows)


def model_table() -> str:
    from ember.models import EXAMPLES, MODELS

    rows = [
        f"| `{n}` | {_first_line(MODELS.get(n))} | {EXAMPLES.get(n, '')} | {_keys(MODELS, n)} |" for n in MODELS.names()
    ]
    return "| model | what it is | meant for | its own keys (`model.KEY`) |\n| --- | --- | --- | --- |\n" + "\n".join(
        rows
    )


def on_page_markdown(markdown, page, config, files):
    if "<!-- ember:data-table -->" in markdown:
        markdown = markdown.replace("<!-- ember:data-table -->", data_table())
    if "<!-- ember:model-table -->" in markdown:
        markdown = markdown.replace("<!-- ember:model-table -->", model_table())
    return markdown
