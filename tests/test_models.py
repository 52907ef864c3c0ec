"""Model loading: every format, metadata, flags, safe mode, Keras Applications."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from bulklabel.errors import ConfigError, ModelError
from bulklabel.options import ModelOptions
from bulklabel.settings import parse_image_size
from worker.inference import metadata, preprocess
from worker.inference.decode import decode_image
from worker.inference.models import load_model
from worker.inference.predictor import Predictor

from conftest import CLASSES, IMAGE_SIZE, color_photo, encoded

keras = pytest.importorskip("keras")


def _batch(n: int = 9, seed: int = 5) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    names = [CLASSES[i % 3] for i in range(n)]
    return np.stack([decode_image(encoded(color_photo(c, rng)), IMAGE_SIZE) for c in names]), names


def _scores(spec: str, **opts) -> np.ndarray:
    model = load_model(spec, ModelOptions(**opts))
    batch, _ = _batch()
    return Predictor(model, batch_size=4).predict(batch[:4])


def test_every_format_gives_the_same_predictions_and_metadata(color_model):
    reference = _scores(color_model.keras_path)
    for spec in (color_model.h5_path, color_model.savedmodel_path):
        np.testing.assert_allclose(_scores(spec), reference, rtol=1e-4, atol=1e-5)
        loaded = load_model(spec)
        assert loaded.class_names == CLASSES
        assert loaded.preprocess == "rescale"
        assert loaded.input_size == IMAGE_SIZE
        assert loaded.warnings == []


def test_trained_model_labels_images_correctly(color_model):
    model = load_model(color_model.keras_path)
    batch, names = _batch(12, seed=99)
    scores = Predictor(model, batch_size=12).predict(batch)
    assert [model.label(i) for i in scores.argmax(axis=1)] == names
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def test_model_without_metadata_uses_flags_and_warns(color_model):
    bare = load_model(color_model.bare_path)
    assert bare.class_names is None and bare.preprocess == "none"
    assert any("--preprocess" in w for w in bare.warnings) and any("--labels" in w for w in bare.warnings)
    assert bare.label(2) == "2"
    labels = os.path.join(os.path.dirname(color_model.bare_path), "labels.txt")
    with open(labels, "w") as f:
        f.write("\n".join(CLASSES) + "\n")
    flagged = load_model(color_model.bare_path, ModelOptions(labels=labels, preprocess="rescale"))
    assert flagged.class_names == CLASSES and flagged.preprocess == "rescale"
    np.testing.assert_allclose(
        _scores(color_model.bare_path, labels=labels, preprocess="rescale"),
        _scores(color_model.keras_path), rtol=1e-5)


def test_flags_override_metadata_and_label_count_is_checked(color_model, tmp_path):
    assert load_model(color_model.keras_path, ModelOptions(preprocess="tf")).preprocess == "tf"
    wrong = tmp_path / "two.txt"
    wrong.write_text("a\nb\n")
    with pytest.raises(ConfigError, match="2 class names were given but the model outputs 3"):
        load_model(color_model.keras_path, ModelOptions(labels=str(wrong)))


def test_metadata_locations(color_model, tmp_path):
    for path in (color_model.keras_path, color_model.h5_path, color_model.savedmodel_path):
        assert metadata.read_metadata(path)["class_names"] == CLASSES
    assert metadata.read_metadata(color_model.bare_path) is None
    # A sidecar works for any model, e.g. a bare .keras file.
    copy = tmp_path / "copy.keras"
    shutil.copy(color_model.bare_path, copy)
    with open(metadata.sidecar_path(str(copy)), "w") as f:
        f.write('{"format": "bulklabel-model/1", "class_names": ["x", "y", "z"]}')
    assert load_model(str(copy)).class_names == ["x", "y", "z"]
    # Rewriting metadata inside a .keras archive replaces it and keeps the model loadable.
    metadata.write_metadata(str(copy), {"class_names": ["p", "q", "r"]})
    metadata.write_metadata(str(copy), {"class_names": ["u", "v", "w"]})
    assert load_model(str(copy)).class_names == ["u", "v", "w"]


def test_model_id_names_the_model_and_hashes_the_file(color_model, tmp_path):
    a = load_model(color_model.keras_path).model_id
    name, digest = a.split("@")
    assert name == "colors" and len(digest) == 12 and int(digest, 16) >= 0
    assert load_model(color_model.h5_path).model_id.split("@")[1] != digest
    copy = tmp_path / "copy.keras"
    shutil.copy(color_model.keras_path, copy)
    assert load_model(str(copy)).model_id == a  # same bytes, same id
    metadata.write_metadata(str(copy), {"name": "colors", "class_names": ["u", "v", "w"]})
    assert load_model(str(copy)).model_id != a


def test_lambda_model_is_refused_unless_unsafe(tmp_path):
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Lambda(lambda x: x * 2.0),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    for path in (tmp_path / "lambda.keras", tmp_path / "lambda.h5"):
        model.save(path)
        with pytest.raises(ModelError, match="--unsafe-model") as err:
            load_model(str(path))
        assert "safe mode" in str(err.value)
        loaded = load_model(str(path), ModelOptions(unsafe=True))
        assert loaded.num_classes == 2


def test_savedmodel_touching_files_is_refused_unless_unsafe(tmp_path):
    import tensorflow as tf

    class Sneaky(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 3], tf.float32)])
        def serve(self, x):
            tf.io.write_file(str(tmp_path / "pwned.txt"), "x")
            return {"out": tf.nn.softmax(tf.reduce_mean(x, axis=[1, 2]))}

    module = Sneaky()
    tf.saved_model.save(module, str(tmp_path / "sneaky"), signatures={"serving_default": module.serve})
    with pytest.raises(ModelError, match="WriteFile.*--unsafe-model"):
        load_model(str(tmp_path / "sneaky"))
    assert load_model(str(tmp_path / "sneaky"), ModelOptions(unsafe=True)).num_classes == 3


def test_free_size_model_needs_image_size(tmp_path):
    model = keras.Sequential([
        keras.Input((None, None, 3)), keras.layers.Conv2D(4, 3),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax"),
    ])
    path = str(tmp_path / "free.keras")
    model.save(path)
    with pytest.raises(ConfigError, match="--image-size"):
        load_model(path)
    loaded = load_model(path, ModelOptions(image_size=(40, 56)))
    assert loaded.input_size == (40, 56)
    scores = Predictor(loaded, 2).predict(np.zeros((2, 40, 56, 3), np.uint8))
    assert scores.shape == (2, 3)


def test_image_size_conflicting_with_a_fixed_model_is_an_error(color_model):
    with pytest.raises(ConfigError, match="conflicts"):
        load_model(color_model.keras_path, ModelOptions(image_size=(64, 64)))
    assert load_model(color_model.keras_path, ModelOptions(image_size=IMAGE_SIZE)).input_size == IMAGE_SIZE


def test_parse_image_size():
    assert parse_image_size("224") == (224, 224)
    assert parse_image_size("240x320") == (240, 320)
    assert parse_image_size(None) is None
    for bad in ("abc", "0", "3x", "1x2x3"):
        with pytest.raises(ConfigError, match="--image-size"):
            parse_image_size(bad)


def test_logits_and_binary_outputs_become_probabilities(tmp_path):
    logits = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(4)])
    logits.save(tmp_path / "logits.keras")
    m = load_model(str(tmp_path / "logits.keras"))
    assert m.output == "logits"
    batch = np.random.default_rng(0).integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    s = Predictor(m, 3).predict(batch)
    np.testing.assert_allclose(s.sum(axis=1), 1.0, atol=1e-5)
    raw = logits.predict(batch.astype("float32"), verbose=0)
    np.testing.assert_allclose(s, keras.ops.convert_to_numpy(keras.ops.softmax(raw)), atol=1e-5)

    binary = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                               keras.layers.Dense(1, activation="sigmoid")])
    binary.save(tmp_path / "binary.keras")
    b = load_model(str(tmp_path / "binary.keras"))
    assert b.num_classes == 2 and b.output == "binary-sigmoid"
    p = binary.predict(batch.astype("float32"), verbose=0)[:, 0]
    s = Predictor(b, 3).predict(batch)
    np.testing.assert_allclose(s[:, 1], p, atol=1e-5)
    np.testing.assert_allclose(s[:, 0], 1 - p, atol=1e-5)


def test_missing_and_broken_models_fail_clearly(tmp_path):
    with pytest.raises(ModelError, match="model not found"):
        load_model(str(tmp_path / "none.keras"))
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load the model"):
        load_model(str(junk))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ModelError, match="not a TensorFlow SavedModel"):
        load_model(str(tmp_path / "folder"))
    with pytest.raises(ConfigError, match="--weights applies only"):
        load_model(str(junk), ModelOptions(weights="x.h5"))


# --- Keras Applications -------------------------------------------------------------


def test_keras_application_with_weights_file(tmp_path):
    """keras:<Name> offline: weights from a file, ImageNet names shipped, family preprocessing."""
    reference = keras.applications.MobileNetV2(weights=None)
    weights = str(tmp_path / "mobilenet_v2.weights.h5")
    reference.save_weights(weights)
    model = load_model("keras:MobileNetV2", ModelOptions(weights=weights))
    assert model.input_size == (224, 224) and model.preprocess == "tf"
    assert model.class_names[0] == "tench" and model.class_names[999] == "toilet_tissue"
    assert len(model.class_names) == 1000
    assert model.model_id.startswith("keras:MobileNetV2@")
    batch = np.random.default_rng(1).integers(0, 255, (2, 224, 224, 3), dtype=np.uint8)
    ours = Predictor(model, 2).predict(batch)
    theirs = reference.predict(
        keras.applications.mobilenet_v2.preprocess_input(batch.astype("float32")), verbose=0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    # The same weights give the same id; the id does not depend on where they came from.
    assert load_model("keras:MobileNetV2", ModelOptions(weights=weights)).model_id == model.model_id


def test_unknown_application_suggests_names():
    with pytest.raises(ModelError, match="Did you mean keras:MobileNetV2"):
        load_model("keras:MobileNetv2")
    with pytest.raises(ConfigError, match="--weights file not found"):
        load_model("keras:MobileNetV2", ModelOptions(weights="/nonexistent/w.h5"))


FAMILIES = [
    ("xception", "tf"), ("inception_v3", "tf"), ("inception_resnet_v2", "tf"), ("mobilenet", "tf"),
    ("mobilenet_v2", "tf"), ("nasnet", "tf"), ("resnet_v2", "tf"), ("vgg16", "caffe"),
    ("vgg19", "caffe"), ("resnet", "caffe"), ("densenet", "torch"), ("efficientnet", "none"),
    ("efficientnet_v2", "none"), ("convnext", "none"), ("mobilenet_v3", "none"),
]


@pytest.mark.parametrize("family,mode", FAMILIES)
def test_preprocess_modes_match_each_family(family, mode):
    from worker.inference.models.applications import FAMILY_PREPROCESS

    assert FAMILY_PREPROCESS[family] == mode
    module = getattr(keras.applications, family)
    x = np.random.default_rng(2).integers(0, 256, (2, 5, 5, 3)).astype("float32")
    expected = np.asarray(module.preprocess_input(x.copy()))
    np.testing.assert_allclose(preprocess.apply_numpy(x, mode), expected, rtol=1e-5, atol=1e-4)
    in_graph = keras.ops.convert_to_numpy(preprocess.apply(keras.ops.convert_to_tensor(x), mode))
    np.testing.assert_allclose(in_graph, expected, rtol=1e-5, atol=1e-4)


def test_every_application_name_has_a_known_family():
    from worker.inference.models.applications import FAMILY_PREPROCESS, application_names, family

    names = application_names()
    assert {"Xception", "MobileNetV2", "ResNet50", "EfficientNetB0"} <= set(names)
    assert all(family(n) in FAMILY_PREPROCESS for n in names)


def test_preprocess_mode_channel_checks():
    with pytest.raises(ConfigError, match="unknown preprocessing"):
        preprocess.check_mode("bogus")
    with pytest.raises(ConfigError, match="3-channel"):
        preprocess.check_mode("caffe", channels=1)


def test_mixed_precision_keeps_float32_scores(tmp_path, color_model):
    """--mixed-precision builds keras:<Name> models in float16; scores stay float32 and close."""
    import subprocess
    import sys

    reference = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
    weights = str(tmp_path / "w.weights.h5")
    reference.save_weights(weights)
    script = f"""
import numpy as np, keras
from worker.inference import runtime
from bulklabel.options import RuntimeOptions
runtime.configure(RuntimeOptions(mixed_precision=True))
from worker.inference.models import load_model, ModelOptions
from worker.inference.predictor import Predictor
m = keras.applications.MobileNetV2(weights={weights!r}, input_shape=(96, 96, 3), classes=10)
assert m.layers[5].compute_dtype == "float16", m.layers[5].compute_dtype
batch = np.random.default_rng(0).integers(0, 255, (2, 96, 96, 3), dtype=np.uint8)
from worker.inference.models.loaded import describe
lm = describe("keras:MobileNetV2", m, lambda x: m(x, training=False), (96, 96), 3, 10, "probabilities",
               ModelOptions(preprocess="tf"), meta={{"name": "keras:MobileNetV2"}}, digest="0" * 12)
scores = Predictor(lm, 2).predict(batch)
assert scores.dtype == np.float32
np.save({str(tmp_path / "mixed.npy")!r}, scores)
saved = load_model({color_model.keras_path!r})
assert any("--mixed-precision applies to keras" in w for w in saved.warnings), saved.warnings
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    batch = np.random.default_rng(0).integers(0, 255, (2, 96, 96, 3), dtype=np.uint8)
    full = reference.predict(keras.applications.mobilenet_v2.preprocess_input(batch.astype("float32")), verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "mixed.npy"), full, atol=2e-2)


def test_batch_size_is_chosen_for_the_device(color_model):
    import tensorflow as tf

    from bulklabel.options import EngineOptions
    from bulklabel.storage import open_reader
    from worker.inference.engine import Engine
    from worker.inference.runtime import CPU_BATCH_SIZE, default_batch_size

    expected = 128 if tf.config.list_logical_devices("GPU") else CPU_BATCH_SIZE
    assert default_batch_size() == expected
    engine = Engine(load_model(color_model.keras_path), open_reader(), EngineOptions())
    assert engine.predictor.batch_size == expected
    chosen = Engine(load_model(color_model.keras_path), open_reader(), EngineOptions(batch_size=5))
    assert chosen.predictor.batch_size == 5


# --- metadata is size-capped before it is read ---------------------------------------


def _bulky_json(size: int) -> bytes:
    """A valid metadata document padded to ``size`` bytes (the old reader accepted any size)."""
    head, tail = b'{"format": "bulklabel-model/1", "class_names": ["u", "v", "w"], "pad": "', b'"}'
    return head + b" " * (size - len(head) - len(tail)) + tail


def test_zip_bomb_metadata_member_is_refused_from_its_size(color_model, tmp_path):
    import zipfile

    bomb = tmp_path / "bomb.keras"
    shutil.copy(color_model.bare_path, bomb)
    info = zipfile.ZipInfo(metadata.MEMBER)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(bomb, "a") as zf, zf.open(info, "w", force_zip64=True) as member:
        block = _bulky_json(64 << 20)
        for start in range(0, len(block), 1 << 24):
            member.write(block[start:start + (1 << 24)])
    assert bomb.stat().st_size < (1 << 20)  # 64 MiB of metadata in a small file
    message = r"metadata member 'bulklabel.json' of .*bomb.keras.* is 64 MiB, over the 16 MiB limit"
    with pytest.raises(ModelError, match=message):
        metadata.read_metadata(str(bomb))
    with pytest.raises(ModelError, match=message):
        load_model(str(bomb))  # checked before Keras, which extracts every member, opens it

    # A forged central directory that understates the size: reading stops at what it claims.
    forged = tmp_path / "forged.keras"
    shutil.copy(color_model.bare_path, forged)
    with zipfile.ZipFile(forged, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(metadata.MEMBER, _bulky_json(20 << 20))
    data = bytearray(forged.read_bytes())
    entry = data.rindex(b"PK\x01\x02", 0, data.rindex(metadata.MEMBER.encode()))
    data[entry + 24:entry + 28] = (1000).to_bytes(4, "little")  # uncompressed size
    forged.write_bytes(data)
    with pytest.raises(ModelError, match=r"cannot read the metadata member 'bulklabel.json'.*CRC"):
        metadata.read_metadata(str(forged))
    with pytest.raises(ModelError, match=r"CRC-32 for file 'bulklabel.json'"):
        load_model(str(forged))  # Keras, which extracts every member, says so first

    # bzip2 and lzma members are refused: zipfile inflates a whole block of them at once.
    bzipped = tmp_path / "bzipped.keras"
    shutil.copy(color_model.bare_path, bzipped)
    with zipfile.ZipFile(bzipped, "a", zipfile.ZIP_BZIP2) as zf:
        zf.writestr(metadata.MEMBER, '{"format": "bulklabel-model/1"}')
    with pytest.raises(ModelError, match=r"'bulklabel.json' of .* uses zip compression method 12"):
        metadata.read_metadata(str(bzipped))
    with pytest.raises(ModelError, match=r"member 'bulklabel.json' uses zip compression method 12"):
        load_model(str(bzipped))


def test_huge_sidecar_and_labels_files_are_refused_from_their_size(color_model, tmp_path):
    copy = tmp_path / "copy.keras"
    shutil.copy(color_model.bare_path, copy)
    folder = tmp_path / "saved"
    shutil.copytree(color_model.savedmodel_path, folder)
    labels = tmp_path / "labels.txt"
    for path in (metadata.sidecar_path(str(copy)), folder / metadata.MEMBER, labels):
        with open(path, "wb") as f:
            f.truncate(1 << 30)  # sparse: a 1 GiB file that takes no space
    for model, what in ((copy, "copy.keras.bulklabel.json"), (folder, "saved/bulklabel.json")):
        with pytest.raises(ModelError, match=rf"metadata file .*{what}' is 1024 MiB, over the 16 MiB limit"):
            load_model(str(model))
    with pytest.raises(ConfigError, match=r"--labels .*labels.txt' is 1024 MiB, over the 16 MiB limit"):
        load_model(color_model.keras_path, ModelOptions(labels=str(labels)))
    # Right at the limit is fine.
    with open(labels, "wb") as f:
        f.write(b"a\nb\nc\n" + b" " * (metadata.MAX_METADATA_BYTES - 7) + b"\n")
    assert load_model(color_model.keras_path, ModelOptions(labels=str(labels))).class_names == ["a", "b", "c"]


def test_huge_h5_metadata_attribute_is_refused(color_model, tmp_path):
    import h5py

    # A fixed-length string: refused from its storage size, before it is read.
    fixed = tmp_path / "fixed.h5"
    with h5py.File(fixed, "w", libver="latest") as f:  # dense attribute storage: over 64 KiB
        f.attrs[metadata.H5_ATTR] = np.bytes_(_bulky_json(17 << 20))
    with pytest.raises(ModelError, match=r"attribute 'bulklabel' of .*fixed.h5' is 17 MiB, over the 16 MiB limit"):
        metadata.read_metadata(str(fixed))
    # A variable-length string (what h5py writes for str) lives, uncompressed, in the file's
    # heap; it is measured once read.
    copy = tmp_path / "copy.h5"
    shutil.copy(color_model.h5_path, copy)
    with h5py.File(copy, "a") as f:
        f.attrs[metadata.H5_ATTR] = _bulky_json(17 << 20).decode()
    with pytest.raises(ModelError, match=r"attribute 'bulklabel' of .*copy.h5' is 17 MiB, over the 16 MiB limit"):
        load_model(str(copy))
    with h5py.File(copy, "a") as f:
        f.attrs[metadata.H5_ATTR] = np.arange(3)
    with pytest.raises(ModelError, match="is not a string"):
        load_model(str(copy))
