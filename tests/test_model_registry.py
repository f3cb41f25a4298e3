"""The registry of model types: one row each, read by the settings, the loader and the docs; a family is
one module plus one row, shown by registering a tiny family and serving a request with it."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.client import exchange
from server import masks
from server.config import Settings, SettingsError
from server.models.loading import load_model, production_model_loader
from server.models.registry import MODEL_TYPES, SAM1, SAM2, ModelType
from tests.conftest import make_settings, ws_url
from tests.support import box_family
from tests.test_docs import DOCS, README, SETTINGS_DOC, section, table_rows

BOX_FAMILY = "tests.support.box_family"


@pytest.fixture
def box_row(monkeypatch) -> ModelType:
    """The tiny family, registered as one row for this test, and not imported yet."""
    row = ModelType("box_test", BOX_FAMILY, "box", "http://127.0.0.1:9/box_test.pth", box_family.EMBEDDING_BYTES)
    monkeypatch.setitem(MODEL_TYPES, row.name, row)
    monkeypatch.delitem(sys.modules, BOX_FAMILY, raising=False)
    return row


def test_a_family_is_one_module_plus_one_row_and_serves_a_request(tmp_path, box_row, start_app, image_server):
    checkpoint = box_family.write_checkpoint(tmp_path / box_row.checkpoint_name)
    assert Settings.from_env({"SAM_MODEL_TYPE": "box_test"}, dotenv=None).sam_checkpoint.name == "box_test.pth"
    settings = make_settings(tmp_path, sam_model_type="box_test", sam_checkpoint=checkpoint, sam_device="cpu")
    assert BOX_FAMILY not in sys.modules
    app = start_app(load_model=production_model_loader(settings), sam_model_type="box_test", sam_checkpoint=checkpoint)
    assert BOX_FAMILY in sys.modules  # imported by the loader, from the row

    box = {"x": 80, "y": 60, "width": 160, "height": 120}  # on the family's grid over the 320 × 240 photo
    outcome = exchange(ws_url(app), {"image_url": image_server.url("/photo.jpg"), "boxes": [box]})
    assert outcome.types == ["queued", "status", "result"], outcome.messages
    mask = masks.decode(outcome.last["masks"][0]["segmentation"])
    expected = np.zeros((240, 320), bool)
    expected[60:180, 80:240] = True
    rounded = [(60, 80), (60, 239), (179, 80), (179, 239)]  # bilinear upsampling rounds off a square's corners
    assert sorted(zip(*np.nonzero(mask != expected))) == rounded
    assert app.store.get_output(outcome.last["id"])["model"] == "box_test"

    again = exchange(ws_url(app), {"image_url": image_server.url("/photo.jpg"), "boxes": [box]})
    assert again.last["cached_embedding"] is True  # the shared cache, keyed by the family's model type


def test_a_family_checkpoint_that_does_not_load_is_the_usual_checkpoint_error(tmp_path, box_row):
    from server.models.checkpoint_file import CheckpointError

    broken = tmp_path / "box_test.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"it is no box_test checkpoint.*{re.escape(box_row.url)}"):
        load_model("box_test", broken, "cpu")


def test_an_unknown_model_type_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="'vit_x' is not a model type: one of vit_h, vit_l, vit_b, sam2.1_hiera_t"):
        load_model("vit_x", tmp_path / "any.pth", "cpu")


def test_every_row_names_a_family_module_with_a_load_function():
    for row in MODEL_TYPES.values():
        spec = importlib.util.find_spec(row.family)  # found without importing it (sam2 would start Hydra)
        assert spec is not None and spec.origin, row
        tree = ast.parse(Path(spec.origin).read_text())
        assert "load" in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}, row.family


def test_sam1_files_are_verified_by_their_hash_prefix_and_sam2_files_by_loading():
    prefixes = {name: row.sha256_prefix for name, row in MODEL_TYPES.items()}
    assert prefixes == {
        "vit_h": "4b8939", "vit_l": "0b3195", "vit_b": "01ec64",
        "sam2.1_hiera_t": None, "sam2.1_hiera_s": None, "sam2.1_hiera_b+": None, "sam2.1_hiera_l": None,
    }
    assert {row.family for row in MODEL_TYPES.values()} == {SAM1, SAM2}
    assert next(iter(MODEL_TYPES)) == Settings().sam_model_type  # the first row is the default


def test_settings_take_the_registrys_types_and_no_other(box_row):
    assert Settings.from_env({"SAM_MODEL_TYPE": "box_test"}, dotenv=None).sam_model_type == "box_test"
    with pytest.raises(SettingsError, match=re.escape(f"one of {', '.join(MODEL_TYPES)}.")):
        Settings.from_env({"SAM_MODEL_TYPE": "vit_x"}, dotenv=None)


# --- the docs read the table ----------------------------------------------------------------


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def test_docs_settings_lists_every_model_type_and_its_checkpoint_in_order():
    rows = table_rows(section(SETTINGS_DOC, "## Model"))
    model_row = next(cells for cells in rows if cells[0] == "`SAM_MODEL_TYPE`")
    assert re.findall(r"`([^`]+)`", model_row[2]) == list(MODEL_TYPES)
    checkpoints = [cells[:2] for cells in rows if len(cells) == 3 and "://" in cells[1]]
    assert checkpoints == [[f"`{row.name}`", row.url] for row in MODEL_TYPES.values()]


def bullet(markdown: str, start: str) -> str:
    """The list item of `markdown` that starts with `start`."""
    return next(item for item in markdown.split("\n- ") if item.startswith(start))


def test_docs_state_the_registrys_memory_per_cached_image():
    figures = sorted({megabytes(row.embedding_bytes) for row in MODEL_TYPES.values()})
    assert figures == ["16.8 MB", "4.2 MB"]
    cache_row = next(cells for cells in table_rows(SETTINGS_DOC) if cells[0] == "`EMBEDDING_CACHE_SIZE`")
    embeddings = bullet(section((DOCS / "operations.md").read_text(), "## Memory"), "**Embeddings.**")
    out_of_memory = bullet(section(README, "## Troubleshooting"), "**Out of memory.**")
    for text in (cache_row[2], embeddings, out_of_memory):
        assert all(figure in text for figure in figures), text
        assert not re.search(r"(?<![\d.])4 MB", text), text  # SAM 2.1's are four times that


def test_readme_helps_choose_among_every_model_type():
    named = set(re.findall(r"`([^`]+)`", section(README, "## Choosing a model")))
    assert set(MODEL_TYPES) <= named
