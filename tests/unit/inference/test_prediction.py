"""`predict`: new samples prepared as the training samples were, from what the checkpoint keeps of its data, give
the trained model's own predictions. The expected ones come from the run's config in-process: the data set built
again (its statistics fitted again), the model with the checkpoint's weights. (tests/e2e/test_checkpoint_commands.py
runs the command.)"""

from __future__ import annotations

import csv
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import conftest
from helpers.trained_runs import TABLE_ROWS, best_checkpoint, compose_command, mistake, raw_table_rows, train_tiny_runs
from trainer.training.checkpoint import load_checkpoint
from trainer.data import build_data
from trainer.inference.prediction import predict
from trainer.run import build_model
from trainer.inference.trained_model import load


def write_priced_table(path: Path, num_rows: int = 300) -> Path:
    """A regression table: price = 100 + 10 a - 5 b + noise, far from 0 in its own units."""
    rng = np.random.default_rng(0)
    features = rng.normal(0, 1, (num_rows, 2))
    price = 100 + 10 * features[:, 0] - 5 * features[:, 1] + rng.normal(0, 0.5, num_rows)
    lines = ["a,b,price"] + [f"{a:.5f},{b:.5f},{p:.5f}" for (a, b), p in zip(features, price)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, offline_data_sets) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("runs")
    priced = write_priced_table(folder / "priced.csv")
    return train_tiny_runs(folder, {"images": ("data=mnist",), "classes": ("data=csv",),
                                    "values": ("data=csv", f"data.path={priced}", "data.target=price")})


def run_config(run_dir: Path):
    """The run's config as train composed it (its .hydra/config.yaml is written by the CLI only)."""
    return load(compose_command("predict", f"ckpt_path={best_checkpoint(run_dir)}", "input=-")).config


def in_process_outputs(run_dir: Path, x: torch.Tensor) -> tuple[torch.Tensor, object]:
    """The trained model's outputs (N, num_outputs) for samples x prepared by the data set built again, and that
    data set: x is uint8 images, or rows of raw features (N, F)."""
    cfg = run_config(run_dir)
    data = build_data(cfg.data)
    _, model = build_model(cfg, data.description)
    model.load_state_dict(load_checkpoint(best_checkpoint(run_dir))["model"])
    model.eval()
    described = data.description
    prepared = described.pixels(x) if described.pixels is not None else torch.from_numpy(described.features(x.numpy()))
    with torch.inference_mode():
        return model(prepared), data


def predictions_for(run_dir: Path, source: Path, *overrides: str):
    return predict(load(compose_command("predict", f"ckpt_path={best_checkpoint(run_dir)}", f"input={source}",
                                        "device=cpu", *overrides)), source)


def features_of(header: list[str], rows: list[list[str]], names: list[str]) -> torch.Tensor:
    """float32 (N, F): the named columns, read as a CSV file's numbers are (float64, then float32)."""
    return torch.from_numpy(np.asarray([[float(row[header.index(name)]) for name in names] for row in rows])
                            .astype(np.float32))


# --- images ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["L", "RGB"], ids=["grey", "colour-converted-to-grey"])
def test_predict_on_saved_test_images_gives_the_trained_model_s_predictions(runs, tmp_path, mode):
    run_dir = runs["images"]
    test_images = build_data(run_config(run_dir).data).test[0][:4]  # (4, 1, 28, 28) uint8
    folder = tmp_path / "images"
    folder.mkdir()
    for number, image in enumerate(test_images):
        Image.fromarray(image[0].numpy(), mode="L").convert(mode).save(folder / f"test{number}.png")
    output, data = in_process_outputs(run_dir, test_images)

    predictions = predictions_for(run_dir, folder)
    assert [p.sample for p in predictions] == [f"test{number}.png" for number in range(4)]
    class_names = data.description.class_names
    assert [p.predicted for p in predictions] == [class_names[k] for k in output.argmax(dim=1).tolist()]
    for prediction, probabilities in zip(predictions, torch.softmax(output, dim=1).tolist()):
        assert list(prediction.probabilities) == data.description.class_names  # MNIST's own names: "0 - zero", ...
        assert list(prediction.probabilities.values()) == pytest.approx(probabilities, abs=1e-6)


def test_an_image_of_another_size_is_resized_to_the_training_images(runs, tmp_path):
    run_dir = runs["images"]
    image = build_data(run_config(run_dir).data).test[0][0, 0].numpy()  # (28, 28)
    Image.fromarray(image, mode="L").resize((56, 40)).save(tmp_path / "large.jpg")
    [prediction] = predictions_for(run_dir, tmp_path / "large.jpg")
    assert prediction.sample == "large.jpg"
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_a_folder_is_listed_as_training_lists_a_class_folder(runs, tmp_path):
    """Hidden files left alone (a Mac leaves a ._NAME AppleDouble file beside each file it copies to another disk,
    which is no image), and the images of its subfolders named by their path in it."""
    image = build_data(run_config(runs["images"]).data).test[0][0, 0].numpy()  # (28, 28)
    folder = tmp_path / "images"
    for path in (folder / "a.png", folder / "more" / "b.png", folder / ".thumbnails" / "c.png"):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(path)
    (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    assert [p.sample for p in predictions_for(runs["images"], folder)] == ["a.png", "more/b.png"]


# --- tables ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_predict_on_rows_of_the_table_gives_the_trained_model_s_classes(runs, tmp_path, suffix):
    run_dir = runs["classes"]
    header, rows = raw_table_rows()
    source = tmp_path / f"rows{suffix}"
    if suffix == ".csv":  # the columns in another order, and without the target: found by name
        order = ["d", "c", "b", "a"]
        source.write_text("\n".join([",".join(order)] + [",".join(row[header.index(n)] for n in order)
                                                         for row in rows]) + "\n")
    else:
        source.write_text(json.dumps([{name: float(value) for name, value in zip(header, row) if name != "colour"}
                                      for row in rows]))
    output, data = in_process_outputs(run_dir, features_of(header, rows, ["a", "b", "c", "d"]))

    predictions = predictions_for(run_dir, source)
    assert [p.sample for p in predictions] == [f"row {number}" for number in range(1, TABLE_ROWS + 1)]
    class_names = data.description.class_names
    assert [p.predicted for p in predictions] == [class_names[k] for k in output.argmax(dim=1).tolist()]
    assert data.description.class_names == list(conftest.CSV_CLASSES)
    for prediction, probabilities in zip(predictions, torch.softmax(output, dim=1).tolist()):
        assert list(prediction.probabilities.values()) == pytest.approx(probabilities, abs=1e-6)


def test_one_json_object_is_one_sample(runs, tmp_path):
    header, rows = raw_table_rows()
    (tmp_path / "row.json").write_text(json.dumps({name: float(value) for name, value in zip(header, rows[0])
                                                   if name != "colour"}))
    (tmp_path / "row.csv").write_text(",".join(header) + "\n" + ",".join(rows[0]) + "\n")
    assert predictions_for(runs["classes"], tmp_path / "row.json") == predictions_for(runs["classes"],
                                                                                      tmp_path / "row.csv")


def test_regression_predicts_values_in_the_data_s_units(runs, tmp_path):
    run_dir = runs["values"]
    cfg = run_config(run_dir)
    with open(cfg.data.path, newline="") as file:
        header, *rows = list(csv.reader(file))
    rows = rows[:TABLE_ROWS]
    (tmp_path / "rows.csv").write_text("\n".join(",".join(row) for row in [header, *rows]) + "\n")
    output, data = in_process_outputs(run_dir, features_of(header, rows, ["a", "b"]))
    expected = data.description.targets.inverse(output.numpy())[:, 0]  # standardised output -> price

    values = [p.values for p in predictions_for(run_dir, tmp_path / "rows.csv")]
    assert all(len(value) == 1 for value in values)
    assert [value[0] for value in values] == pytest.approx(expected.tolist(), rel=1e-6)
    assert all(50 < value[0] < 150 for value in values)  # prices around 100, not standard deviations around 0


def test_a_checkpoint_that_keeps_no_description_of_its_data_reads_the_data_set_again(runs, tmp_path):
    header, rows = raw_table_rows()
    (tmp_path / "rows.csv").write_text("\n".join(",".join(row) for row in [header, *rows]) + "\n")
    older = {key: value for key, value in load_checkpoint(best_checkpoint(runs["classes"])).items() if key != "data"}
    (tmp_path / "older" / "checkpoints").mkdir(parents=True)
    torch.save(older, best_checkpoint(tmp_path / "older"))
    assert predictions_for(tmp_path / "older", tmp_path / "rows.csv") == predictions_for(runs["classes"],
                                                                                         tmp_path / "rows.csv")


# --- mistakes -------------------------------------------------------------------------------------------------

def image_file_bytes(image_format: str) -> bytes:
    """A 28x28 grey image of noise, as a PNG or JPEG file holds it."""
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, image_format)
    return buffer.getvalue()


def first_half(content: bytes) -> bytes:
    return content[:len(content) // 2]


# (the run, the input file's name and content (bytes, text, or None for no file), other overrides; the key, the
# value as the message shows it with {input} for the file's path, a part of what is allowed)
MISTAKES = [
    ("classes", "digit.png", b"\x89PNG\r\n\x1a\n", [], "input", "'{input}'", "a .csv, .csv.gz, .parquet or .json "
                                                                             "file of rows of the features a, b, c, "
                                                                             "d: this model was trained on a table"),
    ("classes", "rows.txt", "a,b,c,d\n1,2,3,4\n", [], "input", "'{input}'", "a .csv, .csv.gz, .parquet or .json file"),
    ("classes", "rows.csv", "a,b,d\n1,2,3\n", [], "input", "'{input}'", "(it has no column 'c')"),
    ("classes", "rows.csv", "a,b,c,d\n1,2,x,4\n", [], "input", "'{input}'", "column 'c' (line 2 has 'x')"),
    ("classes", "rows.json", '[{"a": 1, "b": 2, "d": 4}]', [], "input", "'{input}'", "(row 1 has no 'c')"),
    ("classes", "rows.json", '{"a": 1, "b": "2", "c": 3, "d": 4}', [], "input", "'{input}'", "(row 1 has 'b': '2')"),
    ("classes", "rows.json", "3", [], "input", "'{input}'", "a JSON object {feature: number} or a list of them"),
    ("classes", "missing.csv", None, [], "input", "'{input}'", "a file or folder that exists"),
    ("classes", "rows.csv", "a,b,c,d\n1,2,3,4\n", ["top_k=0"], "top_k", "0", "an integer >= 1"),
    ("classes", None, None, ["input=???"], "input", "'???'", "(a value is required)"),
    ("images", "rows.csv", "a,b,c,d\n1,2,3,4\n", [], "input", "'{input}'", "a PNG, JPEG, BMP or WebP image, or a "
                                                                           "folder of them: this model was trained "
                                                                           "on images of shape (1, 28, 28)"),
    ("images", "digit.png", "not an image", [], "input", "'{input}'", "a PNG, JPEG, BMP or WebP image (cannot "
                                                                      "identify"),
    ("images", "digit.png", first_half(image_file_bytes("PNG")), [], "input", "'{input}'",
     "a PNG, JPEG, BMP or WebP image (image file is truncated)"),
    ("images", "digit.jpg", first_half(image_file_bytes("JPEG")), [], "input", "'{input}'",
     "a PNG, JPEG, BMP or WebP image (image file is truncated"),
    ("classes", "rows.json", "[" * 100_000 + "]" * 100_000, [], "input", "'{input}'",
     "(it nests lists or objects too deeply to read)"),
    ("classes", "rows.json", '{"a": 1, "b": 2, "c": 3, "d": 1' + "0" * 400 + "}", [], "input", "'{input}'",
     f"(row 1 has 'd': 1{'0' * 39})"),  # the value cut to 40 characters
    ("classes", "rows.json", '{"a": 1, "b": 2, "c": 3e39, "d": 4}', [], "input", "'{input}'",
     "within float32's range of ±3.4e+38 (row 1 has 'c': 3e+39)"),
    ("classes", "rows.csv", "a,b,c,d\n1,2,3,4\n1,-3e39,3,4\n", [], "input", "'{input}'",
     "a number within float32's range of ±3.4e+38 in every row of column 'b' (line 3 has '-3e39')"),
    ("classes", "rows.json", '[{"a": 1, "b": 2, "c": 3, "d": 4}, {"a": 1, "b": 2, "c": 3, "d": 4, "a": 5}]', [],
     "input", "'{input}'", "(an object has the key 'a' twice)"),
    ("classes", "rows.json", '{"a": 1, "b": 2, "c": "x' + "y" * 1000 + '", "d": 4}', [], "input", "'{input}'",
     f"(row 1 has 'c': 'x{'y' * 38})"),
    ("classes", "x" * 300 + ".csv", None, [], "input", "'{input}'", "a file or folder that exists"),
]


@pytest.mark.parametrize("run, name, content, overrides, key, value, allowed", MISTAKES,
                         ids=["image-for-a-table", "txt-for-a-table", "csv-without-a-column", "csv-not-a-number",
                              "json-without-a-feature", "json-text-for-a-number", "json-not-an-object",
                              "missing-input", "top-k-0", "no-input", "csv-for-images", "png-not-an-image",
                              "truncated-png", "truncated-jpeg", "json-nested-too-deeply", "json-int-beyond-float",
                              "json-beyond-float32", "csv-beyond-float32", "json-key-twice", "json-long-text-cut",
                              "name-too-long-for-the-os"])
def test_mistakes_name_the_key_the_value_and_what_is_allowed(runs, tmp_path, run, name, content, overrides, key,
                                                             value, allowed):
    source = tmp_path / (name or "none")
    if isinstance(content, bytes):
        source.write_bytes(content)
    elif content is not None:
        source.write_text(content)
    message = mistake("predict", compose_command("predict", f"ckpt_path={best_checkpoint(runs[run])}",
                                                 f"input={source}", "device=cpu", *overrides))
    assert message.startswith(f"{key}: got {value.format(input=source)}, expected "), message
    assert allowed in message, message


def write_png_of_zeros(path: Path, width: int, height: int) -> None:
    """A grey PNG of width x height zeros: a few hundred kilobytes that decode to width * height bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + width)  # each row: its filter type (0, none), then its pixels
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8 bits per pixel, grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side, limit", [(10_000, Image.MAX_IMAGE_PIXELS), (15_000, 2 * Image.MAX_IMAGE_PIXELS)],
                         ids=["above-the-limit-pil-warns-at", "above-the-limit-pil-refuses-at"])
def test_a_decompression_bomb_is_refused_before_it_is_decoded(runs, tmp_path, side, limit):
    write_png_of_zeros(tmp_path / "bomb.png", side, side)
    message = mistake("predict", compose_command("predict", f"ckpt_path={best_checkpoint(runs['images'])}",
                                                 f"input={tmp_path / 'bomb.png'}", "device=cpu"))
    assert message == (f"input: got '{tmp_path / 'bomb.png'}', expected a PNG, JPEG, BMP or WebP image (at most "
                       f"{Image.MAX_IMAGE_PIXELS} pixels: Image size ({side * side} pixels) exceeds limit of {limit} "
                       f"pixels, could be decompression bomb DOS attack.)")


def test_a_json_input_too_large_to_read_is_refused_by_its_size(runs, tmp_path):
    source = tmp_path / "rows.json"
    with source.open("wb") as file:
        file.truncate(300 * 2**20)  # sparse: 300 MiB that take no room on the disk
    message = mistake("predict", compose_command("predict", f"ckpt_path={best_checkpoint(runs['classes'])}",
                                                 f"input={source}", "device=cpu"))
    assert message == (f"input: got '{source}', expected a JSON object {{feature: number}} or a list of them, with "
                       f"the features a, b, c, d, in a file of at most 200 MiB (this one has 300 MiB)")

