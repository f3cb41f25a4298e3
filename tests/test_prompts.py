"""Prompts as SAM takes them: validation, structure, and their making from records."""

import numpy as np
import pytest

from server import prompts
from server.prompts import Point, Prompt


def test_a_prompt_needs_a_box_or_a_point_and_labels_are_0_or_1():
    with pytest.raises(ValueError, match="box or at least one point"):
        Prompt()
    with pytest.raises(ValueError, match="box or at least one point"):
        Prompt(mask_input=np.zeros((1, 256, 256), np.float32))
    with pytest.raises(ValueError, match="label"):
        Prompt(points=(Point(1, 2, 2),))
    with pytest.raises(ValueError, match="mask_input"):
        Prompt(box=(0, 0, 1, 1), mask_input=np.zeros((256, 256), np.float32))


def test_structure_tells_apart_what_cannot_share_a_decoder_call():
    logits = np.zeros((1, 256, 256), np.float32)
    assert Prompt(box=(0, 0, 1, 1)).structure == (0, True, False)
    assert Prompt(points=(Point(1, 1, 1),)).structure == (1, False, False)
    assert Prompt(box=(0, 0, 1, 1), points=(Point(1, 1, 1),)).structure == (1, True, False)
    assert Prompt(points=(Point(1, 1, 1), Point(2, 2, 0)), mask_input=logits).structure == (2, False, True)


def test_v1_boxes_become_box_prompts_with_corners():
    made = prompts.from_boxes([{"x": 1.0, "y": 2.0, "width": 10.0, "height": 20.0}])
    assert [p.box for p in made] == [(1.0, 2.0, 11.0, 22.0)] and made[0].points == ()


def test_a_v1_1_prompt_from_its_dict():
    logits = np.ones((1, 256, 256), np.float32)
    made = prompts.from_dict(
        {"box": {"x": 0, "y": 0, "width": 5, "height": 6}, "points": [{"x": 1, "y": 2, "label": 0}]}, logits
    )
    assert made.box == (0, 0, 5, 6) and made.points == (Point(1, 2, 0),) and made.mask_input is logits
    assert prompts.from_dict({"points": [{"x": 3, "y": 4, "label": 1}]}).box is None
