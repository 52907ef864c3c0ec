"""Safe mode for SavedModels: every op of saved_model.pb audited against an allow-list, before loading.

The hostile models below are real SavedModels written by ``tf.saved_model.save``: each would
write or read a file through a door the former check (a block-list, applied to the serving
signature after ``tf.saved_model.load``) left open. Refusals must happen without loading.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from bulklabel.errors import ModelError
from bulklabel.options import ModelOptions
from worker.inference.models import load_model
from worker.inference.predictor import Predictor

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

SPEC = tf.TensorSpec([None, 8, 8, 3], tf.float32)


def _probs(x):
    return {"out": tf.nn.softmax(tf.reduce_mean(x, axis=[1, 2]))}


class _FileWritingResource(tf.saved_model.experimental.TrackableResource):
    """A resource whose initializer — run by tf.saved_model.load itself — writes a file."""

    def __init__(self, target: str):
        super().__init__()
        self._target = target

    def _create_resource(self):
        return tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[], shared_name=f"audit_{id(self)}")

    def _initialize(self):
        tf.io.write_file(self._target, "written while loading")
        return tf.raw_ops.AssignVariableOp(resource=self.resource_handle, value=1.0)


def _writer(target: str):
    """The FunctionDef of a function that writes ``target``."""
    @tf.function
    def write():
        tf.io.write_file(target, "x")
        return tf.constant(0)

    return write.get_concrete_function().function_def


def _save(module, path: Path, **signatures) -> Path:
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve, **signatures})
    return path


def _read_proto(path: Path):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    return proto


def _write_proto(proto, path: Path) -> Path:
    (path / "saved_model.pb").write_bytes(proto.SerializeToString())
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    """SavedModels that touch files, by name; ``targets`` is where they would write."""
    root = tmp_path_factory.mktemp("hostile")
    secret = root / "secret.txt"
    secret.write_text("s3cret\n")
    targets = root / "targets"
    targets.mkdir()
    models: dict[str, Path] = {"root": root, "secret": secret, "targets": targets}

    class ServingWrites(tf.Module):
        @tf.function(input_signature=[SPEC])
        def serve(self, x):
            tf.io.write_file(str(targets / "serving.txt"), "x")
            tf.io.write_file(str(targets / "serving2.txt"), "y")  # the same op twice: listed once
            return _probs(x)

    class OtherSignatureWrites(tf.Module):
        @tf.function(input_signature=[SPEC])
        def serve(self, x):
            return _probs(x)

        @tf.function(input_signature=[SPEC])
        def dump(self, x):
            tf.data.Dataset.from_tensor_slices(x).save(str(targets / "dataset"))
            records = tf.data.Dataset.from_tensors(tf.io.serialize_tensor(x))
            tf.data.experimental.TFRecordWriter(str(targets / "x.tfrecord")).write(records)
            return {"out": tf.reduce_sum(x)}

    class ServingReads(tf.Module):
        @tf.function(input_signature=[SPEC])
        def serve(self, x):
            content = tf.io.read_file(str(secret))
            found = tf.size(tf.io.matching_files(str(root / "*.txt")))
            leak = tf.cast(tf.strings.length(content) + found, tf.float32)
            return {"out": _probs(x)["out"] + 0.0 * leak}

    class ServingReadsDataset(tf.Module):  # no op of the old block-list
        @tf.function(input_signature=[SPEC])
        def serve(self, x):
            lines = tf.data.TextLineDataset(str(secret))
            size = lines.reduce(tf.constant(0), lambda n, line: n + tf.strings.length(line))
            return {"out": _probs(x)["out"] + tf.cast(size, tf.float32)}  # the secret leaks out

    class InitializerWrites(tf.Module):
        def __init__(self):
            super().__init__()
            self.resource = _FileWritingResource(str(targets / "initializer.txt"))

        @tf.function(input_signature=[SPEC])
        def serve(self, x):
            return _probs(x)

    class InitializerReads(tf.Module):
        def __init__(self):
            super().__init__()
            lines = tf.lookup.TextFileIndex
            init = tf.lookup.TextFileInitializer(str(secret), tf.string, lines.WHOLE_LINE, tf.int64, lines.LINE_NUMBER)
            self.table = tf.lookup.StaticHashTable(init, -1)

        @tf.function(input_signature=[SPEC])
        def serve(self, x):
            return {"out": _probs(x)["out"] + tf.cast(self.table.lookup(tf.constant("s3cret")), tf.float32)}

    class LibraryOnly(tf.Module):  # a function no signature calls
        @tf.function(input_signature=[SPEC])
        def serve(self, x):
            return _probs(x)

        @tf.function
        def backdoor(self):
            tf.io.write_file(str(targets / "backdoor.txt"), "x")
            return tf.constant(0)

    models["serving_writes"] = _save(ServingWrites(), root / "serving_writes")
    other = OtherSignatureWrites()
    models["other_signature_writes"] = _save(other, root / "other_signature_writes", dump=other.dump)
    models["serving_reads"] = _save(ServingReads(), root / "serving_reads")
    models["serving_reads_dataset"] = _save(ServingReadsDataset(), root / "serving_reads_dataset")
    models["initializer_writes"] = _save(InitializerWrites(), root / "initializer_writes")
    models["initializer_reads"] = _save(InitializerReads(), root / "initializer_reads")
    library_only = LibraryOnly()
    library_only.backdoor.get_concrete_function()
    models["library_only"] = _save(library_only, root / "library_only")

    # A benign model plus a function nothing refers to: not a signature, not an object.
    class Benign(tf.Module):
        @tf.function(input_signature=[SPEC])
        def serve(self, x):
            return _probs(x)

    orphan_path = _save(Benign(), root / "orphan")
    proto = _read_proto(orphan_path)
    proto.meta_graphs[0].graph_def.library.function.append(_writer(str(targets / "orphan.txt")))
    models["orphan"] = _write_proto(proto, orphan_path)
    models["benign"] = _save(Benign(), root / "benign")

    for item in targets.iterdir():  # anything tracing left behind
        item.unlink() if item.is_file() else shutil.rmtree(item)
    return models


@pytest.fixture
def no_loading(monkeypatch) -> list:
    """Fails the test if tf.saved_model.load is reached: refusals come before loading."""
    calls: list = []

    def load(*args, **kwargs):
        calls.append(args)
        raise AssertionError("tf.saved_model.load was called before the model was refused")

    monkeypatch.setattr(tf.saved_model, "load", load)
    return calls


def _refusal(path: Path) -> str:
    with pytest.raises(ModelError, match="If you trust this model, pass --unsafe-model") as err:
        load_model(str(path))
    return str(err.value)


@pytest.mark.parametrize("name,ops", [
    ("serving_writes", ["WriteFile"]),
    ("other_signature_writes", ["DatasetToTFRecord", "SaveDataset", "SerializeTensor"]),
    ("serving_reads", ["MatchingFiles", "ReadFile", "StringLength"]),
    ("serving_reads_dataset", ["TextLineDataset", "ReduceDataset"]),
    ("initializer_reads", ["InitializeTableFromTextFileV2", "HashTableV2", "LookupTableFindV2"]),
    ("library_only", ["WriteFile"]),
    ("orphan", ["WriteFile"]),
])
def test_hostile_savedmodels_are_refused_before_loading(hostile, no_loading, name, ops):
    message = _refusal(hostile[name])
    assert not no_loading
    for op in ops:
        assert op in message, message
    listed = message.split(": it uses ")[1].split(", outside")[0].split(", ")
    assert listed == sorted(set(listed)), listed  # sorted, each op once
    assert not any(hostile["targets"].iterdir())


def test_initializer_that_writes_a_file_is_refused_before_it_runs(hostile):
    path, written = hostile["initializer_writes"], hostile["targets"] / "initializer.txt"
    message = _refusal(path)
    assert "WriteFile" in message
    assert not written.exists()  # the audit ran before TensorFlow could run the initializer
    # The threats are real, and --unsafe-model lets them through: loading writes the file,
    # before any post-load check could look, and a serving function leaks a file it reads.
    try:
        assert load_model(str(path), ModelOptions(unsafe=True)).num_classes == 3
        assert written.read_text() == "written while loading"
    finally:
        written.unlink(missing_ok=True)
    reader = load_model(str(hostile["serving_reads_dataset"]), ModelOptions(unsafe=True))
    assert reader.forward(np.zeros((1, 8, 8, 3), np.float32)).numpy().min() > 5  # + len("s3cret")
    assert load_model(str(hostile["benign"])).num_classes == 3


def test_refusal_lists_a_capped_number_of_ops(tmp_path, hostile):
    from worker.inference.models.saved_model import MAX_LISTED_OPS

    proto = _read_proto(hostile["benign"])
    graph = proto.meta_graphs[0].graph_def
    for i in range(MAX_LISTED_OPS + 5):
        graph.node.add(name=f"bad_{i}", op=f"Bad{i:02d}")
        graph.node.add(name=f"bad_again_{i}", op=f"Bad{i:02d}")
    (tmp_path / "many").mkdir()
    message = _refusal(_write_proto(proto, tmp_path / "many"))
    listed = ", ".join(f"Bad{i:02d}" for i in range(MAX_LISTED_OPS))
    assert f"it uses {listed} and 5 more, outside" in message


def test_broken_saved_model_pb_is_a_model_error(tmp_path, no_loading):
    (tmp_path / "saved_model.pb").write_bytes(b"\xff\xff\xff not a protobuf")
    with pytest.raises(ModelError, match="cannot read the SavedModel"):
        load_model(str(tmp_path))


# --- the audit on its own, on real exports edited at the protobuf level -----------------


@pytest.fixture(scope="module")
def keras_export(tmp_path_factory) -> Path:
    model = keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(4, 3),
        keras.layers.BatchNormalization(), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, activation="softmax"),
    ])
    path = tmp_path_factory.mktemp("keras_export") / "model"
    model.export(str(path), verbose=False)
    return path


def _saver(proto):
    """(graph, save node, restore node, save function name, restore function name)."""
    meta_graph = proto.meta_graphs[0]
    graph = meta_graph.graph_def
    nodes = {node.name: node for node in graph.node}
    save = nodes[meta_graph.saver_def.save_tensor_name.split(":")[0]]
    restore = nodes[meta_graph.saver_def.restore_op_name]
    return graph, save, restore, save.attr["f"].func.name, restore.attr["f"].func.name


def test_keras_export_passes_and_only_the_savers_touch_checkpoints(keras_export):
    from worker.inference.models.allowed_ops import INFERENCE_OPS, RESTORE_OPS, SAVE_OPS
    from worker.inference.models.graph_audit import refused_ops

    proto = _read_proto(keras_export)
    assert refused_ops(proto) == []
    graph, _, _, save_fn, restore_fn = _saver(proto)
    ops = {fn.signature.name: {node.op for node in fn.node_def} for fn in graph.library.function}
    assert {"SaveV2", "MergeV2Checkpoints"} <= ops[save_fn] and "RestoreV2" in ops[restore_fn]
    assert all(not (names & (SAVE_OPS | RESTORE_OPS)) for fn, names in ops.items() if fn not in (save_fn, restore_fn))
    assert SAVE_OPS.isdisjoint(INFERENCE_OPS) and RESTORE_OPS.isdisjoint(INFERENCE_OPS)


def _serving_function(graph):
    return next(fn for fn in graph.library.function if "signature_wrapper" in fn.signature.name)


def _call(node_def, name: str, function: str, op: str = "StatefulPartitionedCall"):
    node = node_def.add(name=name, op=op)
    node.attr["f"].func.name = function
    return node


@pytest.mark.parametrize("edit,expected", [
    # the serving function calls the saver's save function
    ("serving_calls_save", {"SaveV2", "MergeV2Checkpoints"}),
    # a primitive op named where a function goes (TensorFlow runs it)
    ("op_as_function", {"WriteFile"}),
    # a signature's output is the save node, so serving would save
    ("signature_fetches_save", {"SaveV2", "MergeV2Checkpoints"}),
    # another node depends on the save node
    ("node_needs_save", {"SaveV2", "MergeV2Checkpoints"}),
    # the restore node (run on load by TF1-style loaders) calls the save function
    ("restore_calls_save", {"SaveV2", "MergeV2Checkpoints"}),
    # the save function calls a helper that writes a file
    ("save_calls_writer", {"WriteFile"}),
])
def test_checkpoint_ops_only_in_the_savers_own_functions(keras_export, edit, expected):
    from worker.inference.models.graph_audit import refused_ops

    proto = _read_proto(keras_export)
    graph, save, restore, save_fn, _ = _saver(proto)
    if edit == "serving_calls_save":
        _call(_serving_function(graph).node_def, "sneak", save_fn)
    elif edit == "op_as_function":
        _call(_serving_function(graph).node_def, "sneak", "WriteFile", op="PartitionedCall")
    elif edit == "signature_fetches_save":
        outputs = proto.meta_graphs[0].signature_def["serving_default"].outputs
        next(iter(outputs.values())).name = save.name + ":0"
    elif edit == "node_needs_save":
        graph.node.add(name="after_save", op="NoOp", input=["^" + save.name])
    elif edit == "restore_calls_save":
        restore.attr["f"].func.name = save_fn
    elif edit == "save_calls_writer":
        writer = _writer("/nonexistent/never-written")
        graph.library.function.append(writer)
        fn = next(fn for fn in graph.library.function if fn.signature.name == save_fn)
        _call(fn.node_def, "sneak", writer.signature.name, op="PartitionedCall")
    assert expected <= set(refused_ops(proto))


# --- real models still load --------------------------------------------------------------


def test_projects_own_model_and_keras_exports_load(color_model, keras_export, tmp_path):
    from worker.inference.models.saved_model import audit

    audit(color_model.savedmodel_path)  # the trainer's model, exported with its metadata
    assert load_model(color_model.savedmodel_path).class_names == color_model.classes
    # A Keras application (weights=None: offline), exported as the docs say.
    app = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=4)
    app.export(str(tmp_path / "app"), verbose=False)
    batch = np.random.default_rng(0).integers(0, 255, (2, 96, 96, 3), dtype=np.uint8)
    loaded = load_model(str(tmp_path / "app"), ModelOptions(preprocess="tf"))
    np.testing.assert_allclose(Predictor(loaded, 2).predict(batch),
                               app.predict(batch / 127.5 - 1.0, verbose=0), rtol=1e-4, atol=1e-5)
    # A small Keras model (Rescaling, BatchNormalization) exported, and the same model inside a
    # hand-written serving function saved by tf.saved_model.save.
    small = keras.saving.load_model(color_model.bare_path)

    class Serve(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.uint8)])
        def serve(self, x):
            return {"probs": self.model(tf.cast(x, tf.float32) / 255.0, training=False)}

    _save(Serve(small), tmp_path / "wrapper")
    batch = np.random.default_rng(1).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    for path, mode in ((keras_export, "none"), (tmp_path / "wrapper", "none")):
        loaded = load_model(str(path), ModelOptions(preprocess=mode))
        assert loaded.num_classes == 3
        assert Predictor(loaded, 3).predict(batch).shape == (3, 3)
    np.testing.assert_allclose(Predictor(load_model(str(tmp_path / "wrapper"), ModelOptions(preprocess="none")), 3)
                               .predict(batch), small.predict(batch / 255.0, verbose=0), rtol=1e-4, atol=1e-5)
