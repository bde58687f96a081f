"""The Space of the IIS evaluate module: a widget for its "default" config.

The module is loaded from this folder (``iis.py`` beside this file): no Hub id, no network. ``iis.py``
imports iis-hf, which the Space installs from the wheel requirements.txt names (iis-hf is not on
PyPI; README.md, "How to publish as a Space"). evaluate's own ``launch_gradio_widget`` needs gradio 3
(``gr.inputs``), so the widget is written here for the gradio of the Space's ``sdk_version``.
"""

import json
import os

import evaluate
import gradio as gr

HERE = os.path.dirname(os.path.abspath(__file__))
# The script's path, not the folder's: given a folder, evaluate loads "<folder name>.py" from it, which in
# a Space (folder "app") would be this file.
metric = evaluate.load(os.path.join(HERE, "iis.py"))

COLUMNS = ["predictions (one label per ratio, JSON)", "references", "standard_predictions"]
EXAMPLE = [["[0, 0]", 0, 0], ["[1, 1]", 1, 1], ["[2, 0]", 2, 2], ["[1, 1]", 2, 2]]
EXAMPLE_RATIOS = "0, 0.5"


def compute(rows, ratios: str) -> dict:
    """The metric on the table's rows (rows with an empty cell are skipped) at the comma-separated ratios."""
    rows = rows.values.tolist() if hasattr(rows, "values") else list(rows)
    rows = [r for r in rows if all(str(cell).strip() not in ("", "nan", "None") for cell in r)]
    if not rows:
        raise gr.Error(
            "fill at least one row: the heads' labels per ratio, the true label, the probe's label"
        )
    try:
        predictions = [json.loads(str(r[0])) for r in rows]
        references = [int(float(r[1])) for r in rows]
        standard = [int(float(r[2])) for r in rows]
        grid = [float(r) for r in ratios.replace(";", ",").split(",") if r.strip()]
        return metric.compute(
            predictions=predictions,
            references=references,
            standard_predictions=standard,
            sparsity_ratios=grid,
        )
    except ValueError as err:  # the metric names what is wrong
        raise gr.Error(str(err)) from None


def build() -> gr.Blocks:
    with gr.Blocks(title="IIS: Inherent Interpretability Score") as demo:
        gr.Markdown(
            "# IIS: Inherent Interpretability Score\n"
            "One row per sample: the labels your interpretation heads predicted at each sparsity ratio (a JSON "
            "list, one per ratio), the true label, and the label of the linear probe on the representation."
        )
        table = gr.Dataframe(
            headers=COLUMNS,
            value=EXAMPLE,
            datatype=["str", "number", "number"],
            col_count=(3, "fixed"),
            row_count=(len(EXAMPLE), "dynamic"),
            interactive=True,
        )
        ratios = gr.Textbox(label="sparsity ratios, one per prediction column", value=EXAMPLE_RATIOS)
        button = gr.Button("Compute IIS", variant="primary")
        output = gr.JSON(label="iis.compute(...)")
        button.click(compute, [table, ratios], output)
    return demo


if __name__ == "__main__":
    build().launch()
