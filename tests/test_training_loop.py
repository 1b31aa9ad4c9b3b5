"""The one fine-tuning loop (training.loop) with a toy task, and the shared docs and script options."""

from __future__ import annotations

import inspect
import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_stem_defects.network_io import read_weights  # noqa: E402
from napari_stem_defects.training.finetune import finetune_cell_cnn  # noqa: E402
from napari_stem_defects.training.finetune_columns import finetune_column_unet  # noqa: E402
from napari_stem_defects.training.loop import FinetuneTask, run_finetune  # noqa: E402
from napari_stem_defects.training.script_args import training_parser  # noqa: E402


class LineTask(FinetuneTask):
    """Fit y = 3 x with one weight that starts at 0; the held-out score is minus the squared error."""

    kind = "toy"
    rng_stream = 1

    def __init__(self, base_path):
        self.base_path = base_path
        self.n_train, self.n_val = 5, 2

    def prepare(self, cancel):
        return True

    def load_model(self):
        model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(model.weight)
        return model, {"arch": {"n": 1}}, self.base_path

    def evaluate(self, model):
        return {"error": float((model.weight.item() - 3.0) ** 2)}

    def eval_record(self, metrics):
        return {"val_error": metrics["error"]}

    def batch_loss(self, model, rng):
        x = torch.from_numpy(rng.normal(size=(16, 1)).astype(np.float32))
        loss = ((model(x) - 3 * x) ** 2).mean()
        self.last = float(loss.detach())
        return loss

    def tally(self):
        return {"last": self.last}

    def metadata(self, before, after):
        return {"heldout": {"before": before, "after": after}}

    def card(self, meta):
        return f"# toy {meta['name']}\n"


def _run(tmp_path, **kw):
    base = tmp_path / "base.bin"
    base.write_bytes(b"shipped")
    args = {"steps": 20, "lr": 0.5, "seed": 0, "threads": 1, "progress": None, "cancel": None, "eval_every": 8,
            "name": None, "command": "pytest", "overwrite": False, **kw}
    return run_finetune(LineTask(base), tmp_path / "toy", **args)


def test_loop_evaluates_reports_and_writes_the_last_weights(tmp_path):
    seen = []
    result = _run(tmp_path, progress=seen.append)
    evals = [d["step"] for d in seen if "val_error" in d]
    train = [d["step"] for d in seen if "loss" in d]
    assert evals == [0, 8, 16, 20] and train == list(range(1, 21))  # step 0: the start; the last step is measured
    assert all(d["steps"] == 20 for d in seen) and result.history == seen
    assert result.before["error"] == pytest.approx(9.0) and result.after["error"] < 1.0  # it learned (9 -> under 1)
    state, meta = read_weights(result.path, "toy", "nowhere")
    assert (float(state["weight"]) - 3.0) ** 2 == pytest.approx(result.after["error"])  # the last weights
    assert meta["kind"] == "toy" and meta["name"] == "toy" and meta["arch"] == {"n": 1}
    assert meta["command"] == "pytest" and meta["heldout"]["after"] == result.after
    assert result.card.read_text() == "# toy toy\n" and (result.n_train, result.n_val) == (5, 2)
    with pytest.raises(FileExistsError):
        _run(tmp_path)


def test_cancel_stops_the_loop_and_writes_nothing(tmp_path):
    cancel = threading.Event()

    def progress(rec):
        if rec["step"] == 8:
            cancel.set()

    assert _run(tmp_path, progress=progress, cancel=cancel) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.bin"]


@pytest.mark.parametrize("func", [finetune_cell_cnn, finetune_column_unet])
def test_every_parameter_of_a_finetuning_function_is_documented(func):
    doc = inspect.getdoc(func)
    assert "{shared" not in doc
    for name in inspect.signature(func).parameters:
        assert any(line.split(" : ")[0].split(", ").count(name) for line in doc.splitlines()), name
    assert "FileExistsError" in doc


def test_training_scripts_share_their_common_options():
    long = training_parser("x", steps=7, batch=3, batch_help="b", twins=2, val=1, eval_every=4, out=None,
                           long_runs=True).parse_args([])
    assert (long.steps, long.batch, long.twins, long.val, long.eval_every, long.lr) == (7, 3, 2, 1, 4, 2e-3)
    assert long.device == "cpu" and long.deadline_minutes is None and long.init is None
    short = training_parser("x", steps=7, batch=3, batch_help="b", val=1, eval_every=4, out=None,
                            eval_only=True).parse_args(["--eval-only"])
    assert short.eval_only and not hasattr(short, "twins") and not hasattr(short, "device")
