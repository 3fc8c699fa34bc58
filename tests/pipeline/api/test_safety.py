"""Output safety in the pipeline: real tiny checkers on builtin:tiny pictures."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image

from pipeline.api.batch import image_seeds
from pipeline.api.errors import ContentFilteredError, ModelLoadError
from pipeline.api.safety import CheckedGenerator, checker_folder_problem, draw, redraw_seed
from pipeline.engine.generator import SDXLGenerator
from pipeline.engine.safety_checker import SafetyChecker
from tests.support import safety_checkers
from tests.support.assets import alike, noise_picture
from tests.support.recording import Recording
from tests.support.specs import spec

AVATAR = noise_picture(1)
JOB = spec(width=64, height=64, num_inference_steps=2, seed=40, num_images=3)
# Pictures of one model and seed agree within 1 of 255 whatever the batch: `alike`.


def loaded(folder: Path) -> SafetyChecker:
    checker = SafetyChecker(str(folder))
    checker.load()
    return checker


def single(tiny: SDXLGenerator, seed: int) -> Image.Image:
    return tiny.generate(dataclasses.replace(JOB, seed=seed, num_images=1), AVATAR)[0]


def test_a_checker_that_flags_nothing_changes_no_picture_and_no_seed(
    tiny: SDXLGenerator, tmp_path: Path
) -> None:
    recording = Recording(tiny)
    checked = CheckedGenerator(recording, loaded(safety_checkers.flag_none(tmp_path)))
    drawn = checked.draw(JOB, AVATAR)
    plain = tiny.generate(JOB, AVATAR)
    assert drawn.seeds == image_seeds(JOB) == [40, 41, 42]
    assert all(alike(a, b) for a, b in zip(drawn.pictures, plain, strict=True))
    assert recording.draws == [(40, 3)]
    assert (drawn.checked, drawn.flagged, drawn.redraws) == (3, 0, 0)
    assert drawn.check_seconds > 0


def test_a_checker_that_flags_everything_redraws_then_refuses(
    tiny: SDXLGenerator, tmp_path: Path
) -> None:
    recording = Recording(tiny)
    checked = CheckedGenerator(recording, loaded(safety_checkers.flag_all(tmp_path)), max_redraws=2)
    with pytest.raises(ContentFilteredError, match="3 of 3 picture") as raised:
        checked.draw(JOB, AVATAR)
    # One draw, then the whole batch twice more at seed + i + k * 3.
    assert recording.draws == [(40, 3), (43, 3), (46, 3)]
    assert (raised.value.checked, raised.value.flagged, raised.value.redraws) == (9, 9, 6)


def test_no_redraws_refuses_at_once(tiny: SDXLGenerator, tmp_path: Path) -> None:
    recording = Recording(tiny)
    checked = CheckedGenerator(recording, loaded(safety_checkers.flag_all(tmp_path)), max_redraws=0)
    with pytest.raises(ContentFilteredError):
        checked.generate(JOB, AVATAR)
    assert recording.draws == [(40, 3)]


def test_only_the_flagged_picture_is_redrawn_with_its_own_seed(
    tiny: SDXLGenerator, tmp_path: Path
) -> None:
    first = tiny.generate(JOB, AVATAR)
    target = safety_checkers.embedding(first[1])
    # Flag pictures like the middle one; the others (and the redraw) stay below.
    others = [safety_checkers.embedding(p) for p in (first[0], first[2], single(tiny, 44))]
    nearest = max(safety_checkers.cosine(target, other) for other in others)
    assert nearest < 0.998, "the tiny checker cannot tell these pictures apart"
    folder = safety_checkers.flag_like(tmp_path, first[1], (1 + nearest) / 2)
    recording = Recording(tiny)
    drawn = CheckedGenerator(recording, loaded(folder)).draw(JOB, AVATAR)
    # Picture 1 redrawn once, alone, with seed 40 + 1 + 1 * 3.
    assert recording.draws == [(40, 3), (44, 1)]
    assert drawn.seeds == [40, 44, 42]
    assert alike(drawn.pictures[0], first[0])
    assert alike(drawn.pictures[2], first[2])
    assert alike(drawn.pictures[1], single(tiny, 44))
    assert not alike(drawn.pictures[1], first[1])
    assert (drawn.checked, drawn.flagged, drawn.redraws) == (4, 1, 1)


def test_redraw_seeds_wrap_and_consecutive_flags_share_a_batch() -> None:
    job = dataclasses.replace(JOB, seed=2**32 - 2, num_images=4)
    assert [redraw_seed(job, i, 1) for i in range(4)] == [2, 3, 4, 5]
    assert redraw_seed(job, 1, 2) == 7


def test_draw_without_a_checker_reports_the_batch_seeds(tiny: SDXLGenerator) -> None:
    drawn = draw(tiny, JOB, AVATAR)
    assert drawn.seeds == [40, 41, 42]
    assert drawn.checked == 0
    assert len(drawn.pictures) == 3


def test_the_checker_reads_a_saved_folder_of_the_compvis_layout(tmp_path: Path) -> None:
    folder = safety_checkers.flag_none(tmp_path)
    assert {p.name for p in folder.iterdir()} >= {
        "config.json",
        "preprocessor_config.json",
        "model.safetensors",
    }
    assert checker_folder_problem(folder) is None
    checker = loaded(folder)
    assert checker.parameters > 0
    assert checker.check([noise_picture(2, (64, 64)), noise_picture(3, (40, 90))]) == [
        False,
        False,
    ]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda f: (f / "config.json").unlink(), "config.json is missing"),
        (lambda f: (f / "preprocessor_config.json").write_text("{"), "not valid JSON"),
        (lambda f: (f / "model.safetensors").unlink(), "no weights file"),
        (
            lambda f: (f / "config.json").write_text(json.dumps({"model_type": "bert"})),
            "not a CLIP configuration",
        ),
    ],
)
def test_a_malformed_folder_is_named_before_torch_reads_it(
    tmp_path: Path, damage: object, problem: str
) -> None:
    folder = safety_checkers.flag_none(tmp_path)
    assert callable(damage)
    damage(folder)
    assert problem in (checker_folder_problem(folder) or "")
    with pytest.raises(ModelLoadError, match=problem):
        SafetyChecker(str(folder)).load()


def test_weights_that_do_not_load_are_a_load_error(tmp_path: Path) -> None:
    folder = safety_checkers.flag_none(tmp_path)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="cannot load the safety checker"):
        SafetyChecker(str(folder)).load()
