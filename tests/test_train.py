"""The trainer and evaluate: real training on generated images, real bases, no downloads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from bulklabel.errors import ConfigError
from bulklabel.sinks import read_records
from worker.inference import metadata
from worker.inference.models import load_model
from worker.training.dataset import load_split

from conftest import CLASSES, color_photo, encoded, run_cli

keras = pytest.importorskip("keras")
NEW_NAMES = {"blue": "navy", "green": "emerald", "red": "crimson"}  # the new task's classes


def write_dataset(root: Path, per_class: int, seed: int, layout: str = "flat") -> dict[str, str]:
    rng = np.random.default_rng(seed)
    truth = {}
    for colour in CLASSES:
        for i in range(per_class):
            split = "" if layout == "flat" else ("val" if i % 4 == 0 else "train")
            folder = root / split / NEW_NAMES[colour]
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{i:03d}.jpg"
            size = (int(rng.integers(40, 120)), int(rng.integers(40, 120)))
            path.write_bytes(encoded(color_photo(colour, rng, size)))
            truth[str(path)] = NEW_NAMES[colour]
    return truth


@pytest.fixture(scope="module")
def trained(color_model, tmp_path_factory):
    """A model transferred from the colour model to a 3-class task with new names (train/ + val/)."""
    from bulklabel.options import TrainOptions
    from worker.training.trainer import train

    root = tmp_path_factory.mktemp("train")
    write_dataset(root / "data", 16, seed=11, layout="split")
    result = train(str(root / "data"), str(root / "model" / "palette.keras"), TrainOptions(
        base=color_model.keras_path, epochs=12, lr=0.05, fine_tune_layers=1, fine_tune_epochs=2,
        fine_tune_lr=1e-3, batch_size=8, seed=3, patience=6, verbose=0))
    return root, result


def test_transfer_learning_gives_a_self_describing_model(trained, tmp_path):
    root, result = trained
    meta = metadata.read_metadata(result.out)
    assert meta["class_names"] == ["crimson", "emerald", "navy"]
    assert meta["preprocess"] == "rescale" and meta["image_size"] == [32, 32]
    assert meta["base"] == "colors.keras" and meta["training"]["sizes"] == [32]
    # classify needs no flags, and labels fresh images of the new task correctly.
    fresh = write_dataset(tmp_path / "fresh", 6, seed=99)
    out = tmp_path / "labels.jsonl"
    run = run_cli("classify", str(tmp_path / "fresh"), "--model", result.out, "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "note:" not in run.stderr  # nothing had to be guessed
    records = read_records(out)
    correct = sum(r["label"] == fresh[r["source"]] for r in records)
    assert correct >= len(fresh) - 1, f"{correct}/{len(fresh)}"
    assert result.best_val_accuracy >= 0.9


def test_history_and_plot_are_written_next_to_the_model(trained):
    root, result = trained
    history = json.loads((root / "model" / "history.json").read_text())
    phases = [row["phase"] for row in history["epochs"]]
    assert phases[0] == "feature-extraction" and phases[-1] == "fine-tuning"
    assert all({"accuracy", "val_accuracy", "loss", "val_loss", "learning_rate"} <= set(r) for r in history["epochs"])
    assert max(r["val_accuracy"] for r in history["epochs"]) == pytest.approx(result.best_val_accuracy)
    png = root / "model" / "history.png"
    from PIL import Image

    assert Image.open(png).size == (900, 380)


def test_the_saved_model_is_the_best_epoch_not_the_last(trained):
    """Evaluating the saved model on val/ (through the classify path) gives the best
    validation accuracy seen in training, not the last epoch's."""
    root, result = trained
    model = load_model(result.out)
    from bulklabel.options import EngineOptions
    from worker.training.evaluate import evaluate

    report = evaluate(model, str(root / "data"), EngineOptions(batch_size=8))
    assert report["images"] == 12  # the val/ split
    assert report["accuracy"] == pytest.approx(result.best_val_accuracy, abs=1e-6)


def test_best_weights_keeps_the_best_epoch_whatever_comes_after():
    from worker.training.trainer import BestWeights

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    keeper = BestWeights()
    callback = keeper.callback()
    callback.set_model(model)
    for epoch, acc in enumerate([0.5, 0.9, 0.6, 0.9]):
        model.set_weights([np.full((2, 1), float(epoch), "float32"), np.zeros(1, "float32")])
        callback.on_epoch_end(epoch, {"val_accuracy": acc})
    model.set_weights([np.zeros((2, 1), "float32"), np.zeros(1, "float32")])
    keeper.restore(model)
    assert keeper.best == 0.9 and float(model.get_weights()[0][0, 0]) == 1.0


def test_application_base_two_phases_freezing_and_sizes(tmp_path):
    """MobileNetV2 with a weights file made here: phase 1 changes no base weight; phase 2 trains
    only the top N non-BatchNorm layers; --sizes ends at the last size."""
    from bulklabel.options import TrainOptions
    from worker.training.trainer import train

    write_dataset(tmp_path / "data", 8, seed=5)
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(48, 48, 3))
    weights = str(tmp_path / "mobilenetv2_notop.weights.h5")
    base.save_weights(weights)
    reference = {layer.name: [w.copy() for w in layer.get_weights()] for layer in base.layers}
    result = train(str(tmp_path / "data"), str(tmp_path / "r.keras"), TrainOptions(
        base="MobileNetV2", weights=weights, sizes=[48, 64], epochs=1, fine_tune_layers=12,
        fine_tune_epochs=1, fine_tune_lr=1e-4, batch_size=8, augment=True, seed=2, verbose=0))
    assert [(r["phase"], r["size"][0]) for r in result.history] == [
        ("feature-extraction", 48), ("fine-tuning", 48), ("fine-tuning", 64)]
    saved = keras.saving.load_model(result.out)
    assert saved.input_shape == (None, 64, 64, 3)
    assert metadata.read_metadata(result.out)["image_size"] == [64, 64]
    assert metadata.read_metadata(result.out)["preprocess"] == "tf"
    trained_base = next(layer for layer in saved.layers if isinstance(layer, keras.Model))
    layers = [layer for layer in trained_base.layers if not isinstance(layer, keras.layers.InputLayer)]
    top = {layer.name for layer in layers[-12:]}
    changed = set()
    for layer in layers:
        before, after = reference[layer.name], layer.get_weights()
        if any(not np.array_equal(a, b) for a, b in zip(before, after)):
            changed.add(layer.name)
    bn = {layer.name for layer in layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert changed, "fine-tuning changed no weight"
    assert changed <= top - bn, f"frozen layers changed: {sorted(changed - (top - bn))}"
    assert result.fine_tuned_layers == len([n for n in top if n not in bn])


def test_same_seed_same_model(color_model, tmp_path):
    from bulklabel.options import TrainOptions
    from worker.training.trainer import train

    write_dataset(tmp_path / "data", 6, seed=8)
    runs = []
    for name in ("a", "b"):
        result = train(str(tmp_path / "data"), str(tmp_path / name / "m.keras"),
                       TrainOptions(base=color_model.keras_path, epochs=2, fine_tune_layers=1,
                                    fine_tune_epochs=1, batch_size=4, seed=21, verbose=0))
        runs.append(keras.saving.load_model(result.out).get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*runs))


def test_data_layouts(tmp_path):
    write_dataset(tmp_path / "flat", 10, seed=1)
    train_a, val_a = load_split(str(tmp_path / "flat"), 0.2, seed=4)
    train_b, val_b = load_split(str(tmp_path / "flat"), 0.2, seed=4)
    assert val_a.locations == val_b.locations  # seeded
    assert val_a.counts() == {"crimson": 2, "emerald": 2, "navy": 2}  # stratified
    assert not set(train_a.locations) & set(val_a.locations) and len(train_a) + len(val_a) == 30
    write_dataset(tmp_path / "split", 8, seed=1, layout="split")
    train_c, val_c = load_split(str(tmp_path / "split"), 0.2, seed=4)
    assert all("/val/" in p for p in val_c.locations) and all("/train/" in p for p in train_c.locations)
    (tmp_path / "one" / "only").mkdir(parents=True)
    (tmp_path / "one" / "only" / "a.jpg").write_bytes(encoded(color_photo("red", np.random.default_rng(0))))
    with pytest.raises(ConfigError, match="at least 2 class folders"):
        load_split(str(tmp_path / "one"), 0.2, 0)
    os.rename(tmp_path / "split" / "val", tmp_path / "split" / "elsewhere")
    with pytest.raises(ConfigError, match="no val/"):
        load_split(str(tmp_path / "split"), 0.2, 0)


def test_evaluate_agrees_with_classify_output(trained, tmp_path):
    root, result = trained
    data = tmp_path / "eval"
    truth = write_dataset(data, 5, seed=123)
    (data / "navy" / "broken.jpg").write_bytes(b"\xff\xd8 nope")
    truth[str(data / "navy" / "broken.jpg")] = "navy"
    plot = tmp_path / "cm.png"
    ev = run_cli("evaluate", result.out, str(data), "--json", "--plot", str(plot))
    assert ev.returncode == 0, ev.stderr
    report = json.loads(ev.stdout)
    out = tmp_path / "c.jsonl"
    cl = run_cli("classify", str(data), "--model", result.out, "--out", str(out))
    assert cl.returncode == 0, cl.stderr
    records = read_records(out)
    accuracy = sum(r["label"] == truth[r["source"]] for r in records) / len(records)
    assert report["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    assert report["images"] == 16 and report["errors"] == 1
    assert set(report["per_class"]) == {"crimson", "emerald", "navy"}
    assert all({"precision", "recall", "f1", "support"} <= set(c) for c in report["per_class"].values())
    assert report["per_class"]["navy"]["support"] == 6
    assert sum(map(sum, report["confusion"]["matrix"])) == 16 and "error" in report["confusion"]["columns"]
    assert plot.exists() and plot.stat().st_size > 1000
    human = run_cli("evaluate", result.out, str(data))
    assert "confusion matrix" in human.stdout and "precision" in human.stdout


def test_h5_output_keeps_its_metadata_inside_and_beside(trained, tmp_path):
    from worker.training.trainer import save

    root, result = trained
    model = keras.saving.load_model(result.out)
    out = str(tmp_path / "legacy.h5")
    save(model, out, {"name": "legacy", "class_names": ["crimson", "emerald", "navy"],
                      "preprocess": "rescale", "image_size": [32, 32]})
    assert os.path.exists(metadata.sidecar_path(out))
    os.remove(metadata.sidecar_path(out))  # inside the file is enough
    loaded = load_model(out)
    assert loaded.class_names == ["crimson", "emerald", "navy"] and loaded.warnings == []


def test_train_command_line(color_model, tmp_path):
    write_dataset(tmp_path / "data", 6, seed=2)
    out = tmp_path / "cli" / "m.keras"
    run = run_cli("train", str(tmp_path / "data"), "--base", color_model.keras_path, "--out", str(out),
                  "--epochs", "2", "--fine-tune-epochs", "1", "--fine-tune-layers", "1", "--batch-size", "6",
                  "--no-augment")
    assert run.returncode == 0, run.stderr
    assert "saved" in run.stdout and "best validation accuracy" in run.stdout
    assert "feature-extraction" in run.stderr and "fine-tuning" in run.stderr
    assert (tmp_path / "cli" / "history.json").exists() and (tmp_path / "cli" / "history.png").exists()
    bad = run_cli("train", str(tmp_path / "data"), "--out", str(tmp_path / "m.txt"))
    assert bad.returncode == 2 and "--out must end in .keras" in bad.stderr
    missing = run_cli("train", str(tmp_path / "nope"), "--out", str(out), "--base", color_model.keras_path)
    assert missing.returncode == 2 and "DATA" in missing.stderr


def write_images(folder: Path, colour: str, count: int, seed: int) -> list[str]:
    """``count`` small JPEG photos of ``colour`` in ``folder``; their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{colour}-{i:02d}.jpg"
        path.write_bytes(encoded(color_photo(colour, rng, (40, 48))))
        paths.append(str(path))
    return paths


def test_list_layout_reads_every_spelling_of_a_location_once(tmp_path, capsys):
    from bulklabel.names import file_uri
    from worker.training.dataset import make_batches

    reds = write_images(tmp_path / "store" / "r", "red", 4, seed=1)
    blues = write_images(tmp_path / "store" / "b", "blue", 3, seed=2)
    lists = tmp_path / "data" / "lists"
    lists.mkdir(parents=True)
    missing = str(tmp_path / "store" / "gone.jpg")
    (lists / "crimson.txt").write_text("\n".join([
        "# reviewed 2024-05-01", reds[0], "", os.path.relpath(reds[1], lists), file_uri(reds[2]),
        f"  {reds[3]}  ", file_uri(reds[0]), os.path.relpath(reds[0], lists), missing]) + "\n")
    (lists / "a%2Fb.txt").write_text("\r\n".join([*blues, "s3://bucket/key/photo.jpg", blues[0]]))
    train, val = load_split(str(tmp_path / "data"), 0.25, seed=0)
    assert train.class_names == ["a/b", "crimson"]
    total = {n: train.counts()[n] + val.counts()[n] for n in train.class_names}
    assert total == {"a/b": 4, "crimson": 5}  # duplicates once, comments and blanks skipped
    assert set(train.locations) | set(val.locations) == {*reds, *blues, missing, "s3://bucket/key/photo.jpg"}
    # A missing file is skipped when its batch is made, with a message, like an undecodable one.
    from worker.training.dataset import LabeledFiles

    batch = make_batches(LabeledFiles([reds[0], missing, reds[1]], [1, 1, 1], train.class_names), (32, 32),
                         "rescale", batch_size=3, threads=1)[0]
    assert batch[0].shape == (2, 32, 32, 3) and list(batch[1]) == [1, 1]
    assert f"skipping {missing}: file not found" in capsys.readouterr().err


def test_list_layout_fixed_split_and_its_errors(tmp_path):
    reds = write_images(tmp_path / "store", "red", 3, seed=1)
    greens = write_images(tmp_path / "store", "green", 3, seed=2)
    data = tmp_path / "data"
    for split, part in (("train", slice(0, 2)), ("val", slice(2, 3))):
        (data / "lists" / split).mkdir(parents=True)
        (data / "lists" / split / "crimson.txt").write_text("\n".join(reds[part]))
        (data / "lists" / split / "emerald.txt").write_text("\n".join(greens[part]))
    train, val = load_split(str(data), 0.2, seed=0)
    assert train.locations == reds[:2] + greens[:2] and val.locations == [reds[2], greens[2]]
    assert val.labels == [0, 1]
    (data / "lists" / "val" / "crimson.txt").write_text(reds[2] + "\n" + reds[0])
    with pytest.raises(ConfigError, match="for the class 'crimson' in both lists/train/ and lists/val/"):
        load_split(str(data), 0.2, seed=0)
    (data / "lists" / "val" / "crimson.txt").write_text(reds[2])
    (data / "lists" / "val" / "emerald.txt").write_text(greens[2] + "\n" + reds[2])
    with pytest.raises(ConfigError, match=f"{reds[2]} is listed for two classes, 'crimson' and 'emerald'"):
        load_split(str(data), 0.2, seed=0)
    (data / "lists" / "val" / "emerald.txt").write_text("http://example.com/x.jpg")
    with pytest.raises(ConfigError, match="line 1 of .*emerald.txt: only local paths"):
        load_split(str(data), 0.2, seed=0)
    (data / "lists" / "val" / "emerald.txt").write_text(greens[2])
    write_images(data / "navy", "blue", 1, seed=3)  # a class folder beside lists/
    with pytest.raises(ConfigError, match="both class folders with images \\(navy\\) and lists"):
        load_split(str(data), 0.2, seed=0)


def test_class_folder_names_are_decoded(tmp_path):
    write_images(tmp_path / "data" / "a%2Fb", "red", 2, seed=1)
    write_images(tmp_path / "data" / "%2Ehidden 100%", "blue", 2, seed=2)
    train, val = load_split(str(tmp_path / "data"), 0.5, seed=0)
    assert train.class_names == [".hidden 100%", "a/b"]
    write_images(tmp_path / "data" / "%25", "red", 1, seed=1)
    write_images(tmp_path / "data" / "%", "red", 1, seed=1)
    with pytest.raises(ConfigError, match="folders '%' and '%25' both stand for the class '%'"):
        load_split(str(tmp_path / "data"), 0.5, seed=0)


def test_training_on_a_saved_model_continues_its_head_by_class_name(trained, tmp_path, capsys):
    """The palette model (crimson, emerald, navy) continued on DATA with azure (new), crimson
    and navy: with a learning rate of 0 the new model ranks the shared classes exactly as the
    old one did, though their indices moved."""
    from bulklabel.options import TrainOptions
    from worker.inference import preprocess
    from worker.inference.decode import decode_image
    from worker.training.trainer import train

    root, old = trained
    for name, colour in (("azure", "blue"), ("crimson", "red"), ("navy", "blue")):
        write_images(tmp_path / "data" / name, colour, 3, seed=len(name))
    capsys.readouterr()
    result = train(str(tmp_path / "data"), str(tmp_path / "next.keras"), TrainOptions(
        base=old.out, epochs=1, lr=0.0, fine_tune_layers=0, dropout=0.0, augment=False,
        batch_size=8, seed=5, verbose=0))
    err = capsys.readouterr().err
    assert "continuing from palette: 2 of the 3 classes carried over from its head; new: 'azure'; " \
           "not in DATA, no longer predicted by the new model: 'emerald'" in err
    meta = metadata.read_metadata(result.out)
    assert meta["class_names"] == ["azure", "crimson", "navy"]
    assert meta["training"]["classes_carried"] == 2 and meta["training"]["continued_from"] == "palette"
    rng = np.random.default_rng(0)
    x = np.stack([decode_image(encoded(color_photo(c, rng)), (32, 32)) for c in ("red", "blue", "green") * 2])
    x = preprocess.apply_numpy(x.astype("float32"), "rescale")
    before = keras.saving.load_model(old.out).predict(x, verbose=0)[:, [0, 2]]  # crimson, navy
    after = keras.saving.load_model(result.out).predict(x, verbose=0)[:, [1, 2]]
    before, after = before / before.sum(1, keepdims=True), after / after.sum(1, keepdims=True)
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert len(set(np.argmax(before, 1))) == 2  # the images tell crimson from navy
    # A continued model continues in turn (its base is now nested twice): every class carried.
    again = train(str(tmp_path / "data"), str(tmp_path / "again.keras"), TrainOptions(
        base=result.out, epochs=1, lr=0.0, fine_tune_layers=0, dropout=0.0, augment=False,
        batch_size=8, seed=6, verbose=0))
    assert "3 of the 3 classes carried over" in capsys.readouterr().err
    np.testing.assert_allclose(keras.saving.load_model(again.out).predict(x, verbose=0),
                               keras.saving.load_model(result.out).predict(x, verbose=0), atol=1e-6)


def test_a_head_that_cannot_be_continued_is_trained_anew(color_model, tmp_path, capsys):
    from bulklabel.options import TrainOptions
    from worker.training.trainer import saved_head, train

    for colour in ("blue", "red"):
        write_images(tmp_path / "data" / colour, colour, 3, seed=len(colour))
    capsys.readouterr()
    result = train(str(tmp_path / "data"), str(tmp_path / "m.keras"), TrainOptions(
        base=color_model.bare_path, preprocess="rescale", epochs=1, fine_tune_layers=0, augment=False,
        batch_size=8, verbose=0))
    err = capsys.readouterr().err
    assert "cannot be continued (it has no bulklabel metadata with class names); training a new head" in err
    assert "carried over" not in err
    training = metadata.read_metadata(result.out)["training"]
    assert training["classes_carried"] == 0 and "continued_from" not in training
    flat = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                             keras.layers.Dense(2, activation="softmax")])
    why = saved_head(flat, flat.layers[0].output, {"class_names": ["a", "b"]}, "flat.keras")
    assert why.startswith("its head has a Flatten layer")
